"""Grid vs adaptive vs transfer search vs Optuna's TPE at the adaptive search's budget, side by side.

    python benchmarks/bench_search.py                                   # the issue's full run
    python benchmarks/bench_search.py --replay                          # the study's tables: seconds
    python benchmarks/bench_search.py --variants lora,adalora --reps 1  # what fits a busy machine
    python benchmarks/bench_search.py --store grids.db --grid-only      # grids once; later runs
    python benchmarks/bench_search.py --store grids.db                  # with --store reuse them
    python benchmarks/bench_search.py --synthetic --variants lora,loraplus --reps 1  # seconds

The issue's full run (8 variants x (the 10-LR fine grid at 100 steps + adaptive + TPE + transfer)
x 3 repetitions) is at most about 34,000 training steps (the searches' budgets) in some 700
trials. On a GPU machine, one prepared command (the same command again continues it; ``--gpu``
stops at once without CUDA):

    python benchmarks/bench_search.py --gpu --store bench.db --json bench.json \
        --variants lora,loraplus,adalora,dora,hira,lora-ga,delora,melora --max-minutes 50

In pieces, on a small machine or several (same settings in every piece): ``--methods`` picks
the methods (the grid, which every row is compared with, is run or reused whatever it says),
``--variants`` and ``--first-rep``/``--reps`` the rest, ``--max-minutes`` ends a piece between
two sweeps (exit code 3: something is left). With ``--store FILE`` every finished sweep is kept
and reused, never run again: a grid runs once and serves every method and repetition, and an
interrupted run continues where it stopped (a killed one loses at most its running trial, which
is retried; a TPE study keeps its finished trials, and trial n's proposal depends only on the
trials before it and the seed, so a resumed one proposes what an uninterrupted one would).
Beside FILE live FILE-runs/ (run folders), FILE-tpe.db and FILE-transfer-REP.db; a piece ended
by ``--max-minutes`` leaves only finished sweeps, so those files alone can move to another
machine for the next piece. Each line starts with its method's progress (``[adaptive 3/24]``)
and ends with how many trials it ran (or ``reused from the store``).

Per variant and repetition (search seed = training seed ``rep``), on the embedded task (MiniLM +
Rotten Tomatoes) at ``--steps`` per full trial over the fine grid ``--lrs`` (half-decades,
1e-5..3e-1):

* grid: every LR at full budget, run once (seed 0) and shared by the repetitions;
* adaptive: ``lorasweep run --search adaptive`` through the real store and worker loop (its
  steps: what its trials trained, a promotion counting only the steps past the rung it resumed);
* TPE: Optuna's TPE sampler over log-LR in the grid's range, full-budget trials, as many as fit
  in the adaptive search's steps of that repetition;
* transfer: ``lorasweep run --search transfer`` over all the variants at once (LoRA's adaptive
  search first, its steps counted), in a store of its own per repetition, so that no other
  sweep's LoRA is reused and the priors are the study's tables alone; a last line sums its steps
  over every variant against all their grids.

``--replay``: no training. The transfer search's own plan (:func:`lorasweep.sweep.search.plan`)
on each of the study's four tables, leaving one out: the priors come from the other three, LoRA's
best LR and every rung's score are read off the held-out table (the table has one score per LR,
so every rung of a point reads that score). Per variant: hits (the chosen LR within 1 point of
the table's best), regret (points below the best), steps (full trials / the table's grid), and
how often the window extended or widened; the adaptive search's plan beside it.

``--synthetic`` runs the same methods through the same store and worker loop on
``lorasweep.sweep.synthetic.SyntheticCurve`` instead of training (peaks: lora and dora 1e-3,
loraplus 1e-4, adalora 1e-2; seed noise; a collapse above each peak): seconds instead of hours.

Every method chooses its LR on validation accuracy; the table prints steps used / grid steps,
the chosen LR, its test accuracy, and the gap to the test accuracy of the grid's choice; then
the *choice gap*: the same with the chosen LR's own grid trial, which a repetition with another
training seed than the grid's differs from by seed noise alone.
Everything runs in this process, one method after another per variant, so the figures share the
machine's conditions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

FINE = "1e-5,3.16e-5,1e-4,3.16e-4,1e-3,3.16e-3,1e-2,3.16e-2,1e-1,3.16e-1"
METHODS = ("grid", "adaptive", "tpe", "transfer")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="lora,dora,loraplus,adalora")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--first-rep", type=int, default=0,
                   help="skip the repetitions before this one (a run split over several calls)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lrs", default=FINE)
    p.add_argument("--model", default="embedded:minilm")
    p.add_argument("--eval-limit", type=int, default=None, help="shorter evaluation (default: all)")
    p.add_argument("--synthetic", action="store_true", help="a synthetic curve instead of training")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--eval-every", type=int, default=0,
                   help="the grids also record validation every N steps (learning curves in the "
                        "store); the searches' trials do not pay for it")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="which methods to run, comma-separated (the grid, which every row is "
                        "compared with, runs or is reused whatever this says)")
    p.add_argument("--no-tpe", action="store_true", help="same as leaving tpe out of --methods")
    p.add_argument("--grid-only", action="store_true", help="same as --methods grid")
    p.add_argument("--replay", action="store_true",
                   help="only the leave-one-out replay on the study's four tables (seconds)")
    p.add_argument("--no-transfer", action="store_true",
                   help="same as leaving transfer out of --methods")
    p.add_argument("--store", type=Path, default=None,
                   help="a SQLite file kept between runs: a finished sweep in it is reused, not "
                        "run again (a grid run once serves every method and repetition), an "
                        "unfinished one continues; beside it: FILE-runs/, FILE-tpe.db, "
                        "FILE-transfer-REP.db (default: all in a temporary folder)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new sweep after this many minutes (the first always runs); "
                        "exits 3 when something is left: rerun the same command to continue")
    p.add_argument("--gpu", action="store_true",
                   help="require a CUDA device (stop at once without one, instead of training "
                        "for hours on the CPU); every trial then trains on it")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHODS)})")
    drop = ({"tpe"} if args.no_tpe else set()) | ({"transfer"} if args.no_transfer else set())
    args.methods = ["grid"] if args.grid_only else [m for m in METHODS
                                                     if m in methods and m not in drop]
    if args.gpu and args.synthetic:
        p.error("--gpu trains; --synthetic trains nothing: give one of them")
    return args


PEAKS = (("lora", -3.0), ("dora", -3.0), ("loraplus", -4.0), ("adalora", -2.0))


def _curve(args):
    if not args.synthetic:
        return None
    from lorasweep.sweep.synthetic import SyntheticCurve

    return SyntheticCurve(peaks=PEAKS)


def _sweep(name: str, variant: str | list[str], args, seeds: list[int], search: str, storage: str,
           runs: str):
    from lorasweep.config import parse_floats
    from lorasweep.launch.run import check_spec, run_sweep
    from lorasweep.sweep.spec import build_spec
    from lorasweep.sweep.store import open_storage
    from lorasweep.sweep.study import sync_sweep
    from lorasweep.sweep.worker import run_worker

    variants = [variant] if isinstance(variant, str) else variant
    data = {"name": name, "model": args.model, "task": "sentiment", "variants": variants,
            "lrs": parse_floats(args.lrs), "seeds": seeds, "train": {"steps": args.steps,
                      "eval_every": args.eval_every if search == "grid" else 0,
                      **({"device": "cuda"} if args.gpu else {})},
            "storage": storage, "search": search, "runs_dir": runs,
            "task_options": {"eval_limit": args.eval_limit} if args.eval_limit else {}}
    spec = check_spec(build_spec(data))
    before = _done(spec)
    curve = _curve(args)
    if before is not None and before[1]:
        pass  # finished in the store: reused, nothing loaded or run
    elif curve is None:
        run_sweep(spec, checked=True)
    else:  # the real store and worker loop; the curve stands in for training
        syncs = sync_sweep(spec, open_storage(storage), storage)
        run_worker(storage, [s.study for s in syncs], trial_fn=curve, poll_s=0.05)
    found = {v.key: _trials(spec, v) for v in spec.variants}
    ran = sum(len(t) for t in found.values()) - (before[0] if before else 0)
    return (found[variants[0]] if isinstance(variant, str) else found), ran


def _done(spec) -> tuple[int, bool] | None:
    """The sweep's completed trials in the store and whether it is finished (a grid: every point
    complete; a search: its plan says so); None where the store or a study does not exist yet."""
    import optuna

    from lorasweep.sweep.store import open_storage, sqlite_path
    from lorasweep.sweep.study import study_name

    if not Path(sqlite_path(spec.storage)).exists():
        return None
    storage = open_storage(spec.storage, create=False)
    names, done, finished = set(optuna.get_all_study_names(storage)), 0, True
    for variant in spec.variants:
        name = study_name(spec, variant)
        if name not in names:
            return None
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        done += len(complete)
        if spec.search == "grid":
            points = {t.user_attrs.get("grid_point") for t in complete}
            finished &= len(points) >= len(spec.lrs) * len(spec.seeds)
        else:
            finished &= bool((study.user_attrs.get("search_state") or {}).get("finished"))
    return done, finished


def _trials(spec, variant=None) -> list[dict]:
    import optuna

    from lorasweep.sweep.store import open_storage
    from lorasweep.sweep.study import study_name

    study = optuna.load_study(study_name=study_name(spec, variant or spec.variants[0]),
                              storage=open_storage(spec.storage, create=False))
    return [{"lr": t.params["lr"], "budget": t.user_attrs.get("budget", 1.0),
             "validation": t.user_attrs.get("validation_accuracy", t.value),
             "test": t.user_attrs.get("test_accuracy"), "steps": t.user_attrs.get("steps"),
             "resumed": t.user_attrs.get("resumed_from_step", 0), "seed": t.params.get("seed")}
            for t in study.get_trials() if t.state.name == "COMPLETE"]


def _choose(trials: list[dict]) -> dict:
    full = [t for t in trials if t["budget"] >= 1.0]
    return max(full, key=lambda t: (t["validation"], -t["lr"]))


def _tpe(variant: str, args, seed: int, n_trials: int, runs: str, store: str
         ) -> tuple[list[dict], int]:
    """Optuna's TPE over log-LR, full-budget trials, run by the same trial function; its study
    lives in ``store``, so a rerun keeps the finished trials and runs only the rest. Trial ``n``
    is sampled by a TPE seeded with (``seed``, ``n``) from the trials before it, so a resumed
    study proposes what an uninterrupted one would have (a trial cut off is marked failed)."""
    import optuna
    from optuna.trial import TrialState

    from lorasweep.config import TrainConfig, TrialSpec, VariantSpec, parse_floats

    lrs = parse_floats(args.lrs)
    name = f"tpe-{variant}-{seed}-{args.steps}-{args.lrs}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize",
                                load_if_exists=True)  # a plain Optuna study, not a sweep
    for cut in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(cut.number, state=TrialState.FAIL)
    ran = 0
    while True:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) >= n_trials:
            break
        n = len(done)
        study.sampler = optuna.samplers.TPESampler(seed=seed * 1000 + n, n_startup_trials=3)
        trial = study.ask()
        lr = trial.suggest_float("lr", min(lrs), max(lrs), log=True)
        spec = TrialSpec(sweep="tpe", study=name, storage="memory", trial_number=n,
                         model=args.model, task="sentiment",
                         task_options={"eval_limit": args.eval_limit} if args.eval_limit else {},
                         model_options={}, variant=VariantSpec(variant), lr=lr, seed=seed,
                         train=TrainConfig(steps=args.steps, batch_size=32, max_length=64,
                                           device="cuda" if args.gpu else "auto"),
                         run_dir=f"{runs}/tpe-{variant}-{seed}-{n}")
        curve = _curve(args)
        if curve is not None:
            result = curve(spec)
        else:
            from lorasweep.train.trial import run_trial

            result = run_trial(spec)
        for key in ("test_accuracy", "steps"):
            trial.set_user_attr(key, result.metrics[key])
        study.tell(trial, result.value)
        ran += 1
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: t.number)[:n_trials]
    return [{"lr": t.params["lr"], "budget": 1.0, "validation": t.value,
             "test": t.user_attrs["test_accuracy"], "steps": t.user_attrs["steps"]}
            for t in done], ran


def _steps(trials: list[dict]) -> int:
    """Steps trained: a trial that resumed the rung below counts only the steps it added; one
    that resumed after a crash counts the steps its failed attempt trained too (a method is
    charged its whole schedule, not what a restart happened to save)."""
    total, reached = 0, {}
    for t in sorted(trials, key=lambda t: (t["lr"], t.get("seed", 0), t["budget"])):
        point = (t["lr"], t.get("seed", 0))
        below = reached.get(point, 0)
        total += (t["steps"] or 0) - min(t.get("resumed") or 0, below)
        reached[point] = t["steps"] or 0
    return total


class _Progress:
    """Per-method progress (``[adaptive 3/24]``) and the ``--max-minutes`` limit: a new sweep
    starts only while under it (the first always does)."""

    def __init__(self, args, variants: list[str], reps: list[int]):
        per = {"grid": len(variants), "adaptive": len(variants) * len(reps),
               "tpe": len(variants) * len(reps), "transfer": len(reps)}
        self.total = {m: per[m] for m in ("grid", *args.methods)}
        self.count = dict.fromkeys(self.total, 0)
        self.limit = None if args.max_minutes is None else 60 * args.max_minutes
        self.started, self.ran, self.stopped = time.perf_counter(), 0, False

    def go(self) -> bool:
        """May the next unit (a sweep, a TPE study) run? False once past the limit; a unit
        already finished in the store is reused whatever the limit."""
        if self.limit is not None and self.ran and time.perf_counter() - self.started > self.limit:
            self.stopped = True
        return not self.stopped

    def tag(self, method: str) -> str:
        self.count[method] += 1
        width = len(str(self.total[method]))
        return f"[{method} {self.count[method]:>{width}}/{self.total[method]}]"


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.replay:
        rows = replay()
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: --gpu: no CUDA device here (torch.cuda.is_available() is False); "
                  "run without --gpu to train on the CPU", file=sys.stderr)
            return 2
        print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    variants = args.variants.split(",")
    reps = list(range(args.first_rep, args.reps))
    progress = _Progress(args, variants, reps)
    rows, grids = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        db = args.store.resolve() if args.store else Path(tmp) / "bench.db"
        storage, runs = f"sqlite:///{db}", f"{db.parent / db.stem}-runs"
        tpe_store = f"sqlite:///{db.parent / f'{db.stem}-tpe.db'}"
        for variant in variants:
            if not _grid(variant, args, storage, runs, grids, rows, progress):
                break
            for rep in reps:
                if "adaptive" not in args.methods and "tpe" not in args.methods:
                    break
                if not progress.go():
                    break
                started = time.perf_counter()
                adaptive, ran = _sweep(f"adaptive-{variant}-{rep}", variant, args, [rep],
                                       "adaptive", storage, runs)
                progress.ran += ran
                pick, used = _choose(adaptive), _steps(adaptive)
                grid, grid_pick = grids[variant], _choose(grids[variant])
                if "adaptive" in args.methods:
                    rows.append({"variant": variant, "method": "adaptive", "rep": rep,
                                 "steps": used / _steps(grid), "lr": pick["lr"],
                                 "test": pick["test"], "gap": grid_pick["test"] - pick["test"],
                                 "choice_gap": _choice_gap(grid, grid_pick, pick["lr"]),
                                 "seconds": time.perf_counter() - started, "ran": ran})
                    _print(rows[-1], progress.tag("adaptive"))
                if "tpe" not in args.methods or not progress.go():
                    continue
                started = time.perf_counter()
                tpe, ran = _tpe(variant, args, rep, max(1, math.floor(used / args.steps)), runs,
                                tpe_store)
                progress.ran += ran
                pick = _choose(tpe)
                rows.append({"variant": variant, "method": "tpe", "rep": rep,
                             "steps": _steps(tpe) / _steps(grid), "lr": pick["lr"],
                             "test": pick["test"], "gap": grid_pick["test"] - pick["test"],
                             "choice_gap": _choice_gap(grid, grid_pick, pick["lr"]),
                             "seconds": time.perf_counter() - started, "ran": ran})
                _print(rows[-1], progress.tag("tpe"))
        if "transfer" in args.methods and not progress.stopped:
            for rep in reps:
                if not progress.go():
                    break
                rows += _transfer_rows(args, rep, grids, db, runs, progress)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if progress.stopped:
        left = {m: progress.total[m] - progress.count[m] for m in progress.total}
        print("stopped at --max-minutes: left " + ", ".join(f"{m} {n}" for m, n in left.items()
                                                           if n) + "; rerun the same command "
              "to continue (finished sweeps are reused from --store)", flush=True)
        return 3
    return 0


def _grid(variant: str, args, storage: str, runs: str, grids: dict, rows: list,
          progress: _Progress) -> bool:
    """The variant's fine grid (seed 0), run once and shared by every method and repetition."""
    if not progress.go():
        return False
    started = time.perf_counter()
    grid, ran = _sweep(f"grid-{variant}", variant, args, [0], "grid", storage, runs)
    progress.ran += ran
    grids[variant] = grid
    pick = _choose(grid)
    rows.append({"variant": variant, "method": "grid", "rep": 0, "steps": 1.0, "lr": pick["lr"],
                 "test": pick["test"], "gap": 0.0, "seconds": time.perf_counter() - started,
                 "ran": ran})
    _print(rows[-1], progress.tag("grid"))
    return True


def _transfer_rows(args, rep: int, grids: dict[str, list[dict]], db: Path, runs: str,
                   progress: _Progress) -> list[dict]:
    """One transfer sweep of every variant (LoRA first), in a store of its own."""
    variants = args.variants.split(",")
    if "lora" not in variants:
        variants = ["lora", *variants]
    started = time.perf_counter()
    store = f"sqlite:///{db.parent / f'{db.stem}-transfer-{rep}.db'}"
    found, ran = _sweep(f"transfer-{rep}", variants, args, [rep], "transfer", store, runs)
    progress.ran += ran
    seconds, rows, used, total = time.perf_counter() - started, [], 0, 0
    tag = progress.tag("transfer")
    for variant, trials in found.items():
        grid = grids.get(variant)
        pick, steps = _choose(trials), _steps(trials)
        used += steps
        if grid is None:  # LoRA added as the reference without a grid of its own
            continue
        grid_pick = _choose(grid)
        total += _steps(grid)
        rows.append({"variant": variant, "method": "transfer", "rep": rep,
                     "steps": steps / _steps(grid), "lr": pick["lr"], "test": pick["test"],
                     "gap": grid_pick["test"] - pick["test"],
                     "choice_gap": _choice_gap(grid, grid_pick, pick["lr"]), "seconds": seconds,
                     "ran": ran})
        _print(rows[-1], tag)
    gaps = [r["choice_gap"] for r in rows]
    hits = sum(g is not None and g <= 0.01 for g in gaps)
    print(f"transfer rep {rep}: {used} steps for {len(found)} variants, LoRA's search included = "
          f"{used / total:.2f} of their grids' {total}; choice within 1 pt in {hits}/{len(rows)}",
          flush=True)
    return rows


def replay() -> list[dict]:
    """The leave-one-out replay on the study's tables (see the module docstring)."""
    from collections import defaultdict

    from lorasweep.published import FAMILIES, load
    from lorasweep.sweep.priors import priors
    from lorasweep.sweep.search import window_around

    options = {"extend": 0}
    rows = []
    for family in FAMILIES:
        table = load(family)
        held_out = priors(exclude_families=(family,))
        lora_curve = dict(table.curves["lora"])
        lora_lr, chance = table.best_lr("lora"), min(lora_curve.values()) / 100
        for variant, curve in sorted(table.curves.items()):
            if variant == "lora" or variant not in held_out:
                continue
            scores, best = dict(curve), max(s for _, s in curve)
            lrs = sorted(scores)
            predicted = lora_lr * held_out[variant].factor
            window = window_around(lrs, predicted, options)
            for method, win in (("transfer", window), ("adaptive", None)):
                result = _replay_plan(lrs, scores, options, win, chance)
                chosen = scores[min(scores, key=lambda lr: abs(math.log(lr / result.best_lr)))]
                notes = " ".join(result.notes)
                rows.append({"family": family, "variant": variant, "method": method,
                             "predicted": predicted, "chosen": result.best_lr,
                             "best": table.best_lr(variant), "regret": best - chosen,
                             "hit": best - chosen <= 1.0, "steps": result.spent / result.grid,
                             "extended": "extended the search" in notes,
                             "widened": "widened" in notes})
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["variant"], r["method"])].append(r)
    print(f"{'variant':<10} {'method':<9} hits  regret(pt) mean/max  steps/grid  extended  widened")
    for (variant, method), rs in sorted(by.items()):
        print(f"{variant:<10} {method:<9} {sum(r['hit'] for r in rs)}/{len(rs)}   "
              f"{sum(r['regret'] for r in rs) / len(rs):5.2f} / {max(r['regret'] for r in rs):5.2f}"
              f"     {sum(r['steps'] for r in rs) / len(rs):.2f}        "
              f"{sum(r['extended'] for r in rs)}         {sum(r['widened'] for r in rs)}")
    for method in ("transfer", "adaptive"):
        rs = [r for r in rows if r["method"] == method]
        print(f"all        {method:<9} {sum(r['hit'] for r in rs)}/{len(rs)}   "
              f"{sum(r['regret'] for r in rs) / len(rs):5.2f} / {max(r['regret'] for r in rs):5.2f}"
              f"     {sum(r['steps'] for r in rs) / len(rs):.2f}        "
              f"{sum(r['extended'] for r in rs)}         {sum(r['widened'] for r in rs)}")
    return rows


def _replay_plan(lrs, scores, options, window, chance):
    """Run the plan to its end, every proposal answered by the table's score at its LR."""
    from lorasweep.sweep.search import Observation, plan

    by_lr = {float(f"{lr:.6g}"): score for lr, score in scores.items()}
    observations: list = []
    while True:
        result = plan(lrs, [0], observations, options, window=window, chance=chance)
        if result.finished:
            return result
        observations += [Observation(p.lr, p.seed, p.budget, "complete", by_lr[p.lr] / 100)
                         for p in result.proposals]


def _choice_gap(grid: list[dict], grid_pick: dict, lr: float) -> float | None:
    """The gap of the chosen LR's own grid trial (seed 0) to the grid's choice: the cost of the
    choice alone, without the seed noise of the repetition's own run (None: LR off the grid)."""
    same = [t for t in grid if math.isclose(t["lr"], lr, rel_tol=1e-4)]
    return grid_pick["test"] - same[0]["test"] if same else None


def _print(row: dict, tag: str) -> None:
    choice = row.get("choice_gap")
    shown = "" if "choice_gap" not in row else (
        "  choice gap  off grid" if choice is None else f"  choice gap {100 * choice:+.1f} pt")
    how = "reused from the store" if not row["ran"] else f"{row['ran']} trials run"
    print(f"{tag} {row['variant']:<10} {row['method']:<9} rep {row['rep']}  steps/grid "
          f"{row['steps']:.2f}  lr {row['lr']:.3g}  test {100 * row['test']:.1f}  gap "
          f"{100 * row['gap']:+.1f} pt{shown}  ({how}, {row['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
