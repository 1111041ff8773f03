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


_STOPPED_IN_PHASE = """
import json, os, signal, sys
import torch
from lorasweep.config import TrialSpec
from lorasweep.train.signals import StopRequests, TrialStopped
from lorasweep.train.trial import run_trial
spec, phase, at = TrialSpec.from_dict(json.loads(sys.argv[1])), sys.argv[2], int(sys.argv[3])
calls = {"n": 0}
def hook(module, args, output):  # the whole model's forward passes of one phase, counted
    if not type(module).__name__.endswith("ForSequenceClassification"):
        return
    if (phase == "evaluating") == module.training:
        return
    calls["n"] += 1
    print(f"{phase} pass {calls['n']}", flush=True)
    if calls["n"] == at:
        os.kill(os.getpid(), signal.SIGTERM)
torch.nn.modules.module.register_module_forward_hook(hook)
with StopRequests() as stops:  # as a worker runs a trial
    try:
        run_trial(spec)
        print("trial finished", flush=True)
    except TrialStopped as stop:
        print(f"stopped: {stop}", flush=True)
"""


@pytest.mark.parametrize(("phase", "variant", "train", "saved"), [
    # LoRA-GA's gradient estimation (8 batches, before step 1): nothing saved yet
    ("estimating", "lora-ga", {"steps": 2, "estimation_batches": 8}, "no checkpoint (step 0)"),
    # the final evaluation (validation, then test: 16 batches), after a checkpoint at step 1
    ("evaluating", "lora", {"steps": 2, "checkpoint_every": 1}, "checkpoint saved at step 1"),
])
def test_a_stop_request_ends_a_long_phase_at_once(tiny_bert_dir, tmp_path, phase, variant,
                                                   train, saved):
    """SIGTERM in the middle of a phase without optimizer steps (the third forward pass of
    it) stops the trial there, with what it saved, instead of after the phase."""
    cfg = TrainConfig(batch_size=8, max_length=32, **train)
    spec = TrialSpec(sweep="s", study="st", storage="", trial_number=0, model=str(tiny_bert_dir),
                     task="sentiment", task_options={"eval_limit": 64}, model_options={},
                     variant=VariantSpec(variant, rank=4, alpha=8), lr=2e-3, seed=0, train=cfg,
                     run_dir=str(tmp_path / "run"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _STOPPED_IN_PHASE, json.dumps(spec.to_dict()),
                           phase, "3"], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout
    assert f"stopped: stopped by SIGTERM: {saved}" in out, out + proc.stderr[-2000:]
    assert "trial finished" not in out
    passes = [line for line in out.splitlines() if line.startswith(f"{phase} pass ")]
    assert len(passes) <= 4, out  # the third pass asked; at most the one under way completes
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
