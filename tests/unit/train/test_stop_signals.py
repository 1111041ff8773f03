"""Real signals to a real trial process: SIGTERM checkpoints then ends it, SIGKILL loses only the
steps after the last checkpoint, and a handler installed before ours (submitit's) still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorasweep.config import TrainConfig, TrialSpec, VariantSpec
from lorasweep.train.checkpoint import checkpoint_path
from lorasweep.train.signals import StopRequests, TrialStopped
from lorasweep.train.trial import run_trial

REPO = Path(__file__).resolve().parents[3]

_KILLED_AT = """
import json, os, sys
from lorasweep.config import TrialSpec
from lorasweep.train.trial import run_trial
spec, at, sig = TrialSpec.from_dict(json.loads(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
class KillAt:
    def on_start(self, total): pass
    def on_step(self, step, loss):
        if step == at:
            os.kill(os.getpid(), sig)
    def report(self, step, value): return False
run_trial(spec, KillAt())
print("trial finished")
"""


def spec_for(model_dir, runs, trial=0) -> TrialSpec:
    cfg = TrainConfig(steps=8, batch_size=8, max_length=32, eval_every=3, checkpoint_every=4)
    return TrialSpec(sweep="s", study="st", storage="", trial_number=trial, model=str(model_dir),
                     task="sentiment", task_options={"eval_limit": 16}, model_options={},
                     variant=VariantSpec("lora", rank=4, alpha=8), lr=2e-3, seed=0, train=cfg,
                     run_dir=str(runs / "lr=0.002,seed=0"))


def kill_at(spec: TrialSpec, step: int, sig: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", _KILLED_AT, json.dumps(spec.to_dict()), str(step),
                           str(int(sig))], capture_output=True, text=True, env=env, timeout=300)


def weights(result):
    return load_file(f"{result.attrs['run_dir']}/adapter/lorasweep_adapter.safetensors")


@pytest.fixture(scope="module")
def whole(tiny_bert_dir, tmp_path_factory):
    """The same trial, never stopped."""
    return run_trial(spec_for(tiny_bert_dir, tmp_path_factory.mktemp("whole")))


@pytest.mark.parametrize(("sig", "at", "resumed_from"), [
    (signal.SIGTERM, 5, 5),  # saved at the step the signal came (not a checkpoint step)
    (signal.SIGKILL, 7, 4),  # nothing can run: the last periodic checkpoint (4) is used
])
def test_signalled_trial_resumes_bit_identical(tiny_bert_dir, tmp_path, whole, sig, at,
                                               resumed_from):
    lost = spec_for(tiny_bert_dir, tmp_path)
    proc = kill_at(lost, at, sig)
    assert proc.returncode == -sig, proc.stderr[-2000:]  # ended by the signal, as without us
    assert "trial finished" not in proc.stdout
    assert not (Path(lost.run_dir) / "adapter").exists()
    resumed = run_trial(spec_for(tiny_bert_dir, tmp_path, trial=1))
    assert resumed.attrs["resumed_from_step"] == resumed_from
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.attrs["history"] == whole.attrs["history"]
    assert resumed.value == whole.value
    assert not checkpoint_path(lost).exists()


def test_previous_handler_runs_after_the_checkpoint(tiny_bert_dir, tmp_path):
    """submitit installs its own SIGUSR2 handler (checkpoint() + requeue); ours saves first,
    then hands the signal on to it."""
    spec = spec_for(tiny_bert_dir, tmp_path)
    seen = []

    def previous(signum, frame):  # stands where submitit's handler is
        seen.append((signum, torch.load(checkpoint_path(spec), weights_only=True)["loop"]["step"]))

    class SignalAt:
        def on_start(self, total):
            pass

        def on_step(self, step, loss):
            if step == 2:
                os.kill(os.getpid(), signal.SIGUSR2)

        def report(self, step, value):
            return False

    before = signal.signal(signal.SIGUSR2, previous)
    try:
        with pytest.raises(TrialStopped, match="SIGUSR2: checkpoint saved at step 2"):
            run_trial(spec, SignalAt())
        assert seen == [(signal.SIGUSR2, 2)]  # once, after the save, with the saved step
        assert signal.getsignal(signal.SIGUSR2) is previous  # put back
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_stop_requests_record_and_forward_only_in_their_scope():
    got = []
    before = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        with StopRequests() as stops:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stops.signum == signal.SIGTERM and got == []  # recorded, not acted on
        stops.forward()
        assert got == [signal.SIGTERM] and stops.signum is None
        stops.forward()
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
