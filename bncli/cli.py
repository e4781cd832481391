"""The bncli command line: thin commands that parse flags, call the library, and render.

    bncli depth-study --init kaiming
    bncli running-stats --momentum 0.3

Heavy imports (torch, pandas, pydantic) happen inside the commands, so `--help` is instant.
Errors the user can fix come out as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from bncli import __version__
from bncli.choices import Activation, Backend, BNMode, DType, Init, InputKind, Norm, Order, RunningStudy
from bncli.errors import BncliError


class _Group(TyperGroup):
    """Turns every usage error, ours or click's, into one line: `Error: ...`."""

    def get_help_option(self, ctx):
        # An unused --help flag reads as None, which typer coerces through a pydantic adapter,
        # importing pydantic (~0.1 s) on `bncli CMD --help`; a bool default skips that.
        opt = super().get_help_option(ctx)
        if opt is not None and opt.default is None:
            opt.default = False
        return opt

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except BncliError as e:
            _fail(str(e), e.exit_code)
        except typer.Abort:
            _fail("aborted", 130)
        except Exception as e:
            # click's usage errors (typer vendors click in recent releases, so match by shape)
            if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
                raise
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(e.format_message() + hint, e.exit_code)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int):
    # one line, and no control character or lone surrogate from a hostile file reaches the terminal
    text = " ".join(message.split())
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    typer.echo(f"Error: {text}", err=True)
    sys.exit(code)


# plain click help, not rich panels: rendering them costs ~0.1 s, half of `bncli --help`
app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_show_locals=False,
                  help="Experiments on how weight init and normalization shape the signal in deep nets.")


def _version(value: bool):
    if value:
        typer.echo(f"bncli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False):
    pass


def _console():
    from rich.console import Console

    return Console()


def _convergence(config, out, name, unused: dict, **flags):
    from bncli import config as cfgmod
    from bncli import plot, report

    for flag, v in unused.items():
        if v is not None:
            raise BncliError(f"{flag}: not used by --study convergence (it feeds (batch_size, num_features) "
                             "batches to BatchNorm1d)")
    cfg = cfgmod.load("running-stats-convergence", config, **flags)
    run = _execute("running-stats-convergence", cfg, out, name)
    console = _console()
    if run.result is not None and len(run.result.table):
        console.print(report.convergence_table(run.result.table, run.result.info["steps_to_1pct"]))
        path = plot.convergence(run.result.table, run.dir / "convergence.png")
        console.print(f"plot: {path}")
    _finish(console, run)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends a run the way Ctrl-C does: what was computed is saved, marked interrupted."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


@contextmanager
def _progress(total: int, label: str, enabled: bool):
    """A transient progress bar; yields the callback a study calls with units done."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=True, console=_console())
    task = None

    def update(done: int):
        nonlocal task
        if task is None:  # shown from the run's first step: a refusal before it prints one clean line
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _execute(study: str, cfg, out: Path, name: str | None, progress_total: int | None = None):
    from bncli.results import execute

    with _sigterm_as_interrupt(), _progress(progress_total or 0, study, progress_total is not None) as cb:
        return execute(study, cfg, out, name, progress=cb)


def _finish(console, run) -> None:
    status = run.meta["status"]
    if status == "interrupted":
        console.print(f"interrupted: partial results saved in {run.dir}")
        raise typer.Exit(130)
    console.print(f"results: {run.dir}")


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML config file; flags override its fields.",
                                                   show_default=False)]
OutOpt = Annotated[Path, typer.Option(help="Root directory for results.")]
NameOpt = Annotated[Optional[str], typer.Option(help="Run name (default: a timestamp and the settings).",
                                                show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed.", show_default="0")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
                                                  show_default="auto")]


@app.command("depth-study", short_help="Std of every layer's output in a deep MLP.")
def depth_study(
    config: ConfigOpt = None,
    init: Annotated[Optional[Init], typer.Option(help="Weight init scheme.", show_default="kaiming")] = None,
    init_std: Annotated[Optional[float], typer.Option(help="Std of the normal init.", show_default="1.0")] = None,
    norm: Annotated[Optional[Norm], typer.Option(help="Normalization after each Linear.",
                                                 show_default="batchnorm")] = None,
    activation: Annotated[Optional[Activation], typer.Option(help="Activation after the norm.",
                                                             show_default="relu")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Number of layers.", show_default="100")] = None,
    width: Annotated[Optional[int], typer.Option(help="Features per layer.", show_default="256")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Rows of the N(0,1) input.", show_default="16")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[Optional[DType], typer.Option(help="Floating-point type.", show_default="float32")] = None,
    keep_weights: Annotated[Optional[bool], typer.Option(
        "--keep-weights/--stream-weights",
        help="Build every weight up front, or draw each when its layer runs (same numbers, less memory).",
        show_default="stream")] = None,
    init_gain: Annotated[Optional[float], typer.Option(
        help="Gain of the orthogonal, xavier, xavier_uniform and lecun_normal inits.", show_default="1.0")] = None,
    groups: Annotated[Optional[int], typer.Option(help="Groups of groupnorm; must divide --width.",
                                                  show_default="32")] = None,
    bn_mode: Annotated[Optional[BNMode], typer.Option(
        help="batchnorm with batch statistics (train) or running ones, 0 and 1 at init (eval).",
        show_default="train")] = None,
    negative_slope: Annotated[Optional[float], typer.Option(help="Slope of leaky_relu below zero.",
                                                            show_default="0.01")] = None,
    order: Annotated[Optional[Order], typer.Option(help="Order of norm and activation after each Linear.",
                                                   show_default="linear-norm-act")] = None,
    residual: Annotated[Optional[float], typer.Option(
        metavar="ALPHA", help="Residual stack: each layer is x + ALPHA * f(x); 0 is a plain stack.",
        show_default="0.0")] = None,
    grads: Annotated[Optional[bool], typer.Option(
        "--grads/--no-grads", help="One backward pass: grad_std and weight_grad_norm (keeps every weight).",
        show_default=False)] = None,
    erank: Annotated[Optional[bool], typer.Option(
        "--erank/--no-erank", help="Effective rank of every layer's output (an SVD per layer).",
        show_default=False)] = None,
    out: OutOpt = Path("results"),
    name: NameOpt = None,
    every: Annotated[Optional[int], typer.Option(
        min=1, help="Show every K-th layer on screen (default: all up to 100 layers, else about 50 rows).",
        show_default=False)] = None,
):
    """Std of every layer's output in a deep MLP, stopping at the first non-finite layer.

    Linear(bias=False) -> norm -> activation, `depth` times, on N(0,1) input of shape
    (batch_size, width). Writes layers.csv, config.yaml and meta.json under
    OUT/depth-study/NAME/.

    Each layer's row also has Brock et al.'s chan_sq_mean and chan_var and the mean-field
    prediction theory_std; --erank and --grads add the effective rank and the gradients.

    Example: bncli depth-study --init normal --norm none --depth 50 --grads
    """
    from bncli import config as cfgmod
    from bncli import report

    cfg = cfgmod.load("depth-study", config, init=init, init_std=init_std, norm=norm,
                      activation=activation, depth=depth, width=width, batch_size=batch_size,
                      seed=seed, device=device, dtype=dtype, keep_weights=keep_weights, init_gain=init_gain,
                      groups=groups, bn_mode=bn_mode, negative_slope=negative_slope, order=order,
                      residual=residual, grads=grads, erank=erank)
    long = cfg.depth > 500 or cfg.depth * cfg.width**2 * cfg.batch_size > 5e10
    run = _execute("depth-study", cfg, out, name, cfg.depth if long else None)
    console = _console()
    if run.result is not None:
        info = run.result.info
        console.print(report.depth_table(run.result.table, every, info["diverged_at"]))
        console.print(report.depth_summary(run.result.table, info["diverged_at"], run.meta["status"], info))
    _finish(console, run)


def _momentum(value: str | None):
    if value is None or value.strip().lower() == "none":
        return value
    try:
        return float(value)
    except ValueError:
        raise BncliError(f"--momentum: expected a number in [0, 1] or none, got {value!r}") from None


@app.command("running-stats", short_help="BatchNorm's running stats against the update formula.")
def running_stats(
    config: ConfigOpt = None,
    momentum: Annotated[Optional[str], typer.Option(
        help="A number in [0, 1], or none for the cumulative average.", show_default="0.3")] = None,
    dims: Annotated[Optional[int], typer.Option(help="1, 2 or 3: BatchNorm1d, 2d or 3d.", show_default="1")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per batch.", show_default="3")] = None,
    num_features: Annotated[Optional[int], typer.Option(help="Channels (default: 5, 6, 4 for 1d, 2d, 3d).",
                                                        show_default=False)] = None,
    feature_shape: Annotated[Optional[str], typer.Option(
        help="Per-channel shape, like 2,2 (default: 1 / 2,2 / 2,2,3 for 1d / 2d / 3d).",
        show_default=False)] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Batches fed to the layer.", show_default="2")] = None,
    input: Annotated[Optional[InputKind], typer.Option(
        "--input", help="constant: channel c holds c+1; randn: fresh seeded N(0,1) each batch.",
        show_default="constant")] = None,
    eps: Annotated[Optional[float], typer.Option(help="BatchNorm eps.", show_default="1e-05")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[Optional[DType], typer.Option(help="float32 or float64.", show_default="float32")] = None,
    study: Annotated[RunningStudy, typer.Option(
        help="check: the update formula; convergence: running estimates against the true statistics.")
    ] = RunningStudy.check,
    input_mean: Annotated[Optional[str], typer.Option(
        help="convergence: the stream's true mean, one number or one per channel.", show_default="1.0")] = None,
    input_std: Annotated[Optional[str], typer.Option(
        help="convergence: the stream's true std, one number or one per channel.", show_default="2.0")] = None,
    keras_momentum: Annotated[Optional[str], typer.Option(
        help="convergence: Keras-style momenta K (comma list), used as PyTorch's m = 1 - K.",
        show_default=False)] = None,
    out: OutOpt = Path("results"),
    name: NameOpt = None,
):
    """BatchNorm's running_mean/var, checked against r = (1 - m) * r + m * batch_stat.

    Feeds `iterations` batches to nn.BatchNorm{1,2,3}d in train mode and compares its
    running buffers with the update formula computed independently in float64. Writes
    running_stats.csv, config.yaml and meta.json under OUT/running-stats/NAME/.

    With --study convergence, compares EMA estimates (one per momentum in a comma list),
    the cumulative average and a PreciseBN population estimate against the true statistics
    of a seeded N(input_mean, input_std^2) stream, and writes convergence.csv and
    convergence.png under OUT/running-stats-convergence/NAME/ (defaults there: momentum
    0.01,0.1,0.3, batch_size 32, num_features 4, iterations 1000).

    Example: bncli running-stats --momentum 0.3 --dims 2
    Example: bncli running-stats --study convergence --momentum 0.01,0.1,0.3 --input-std 2
    """
    from bncli import config as cfgmod
    from bncli import report

    if study == RunningStudy.convergence:
        _convergence(config, out, name, momentum=momentum, keras_momentum=keras_momentum, batch_size=batch_size,
                     num_features=num_features, iterations=iterations, input_mean=input_mean,
                     input_std=input_std, eps=eps, seed=seed, device=device, dtype=dtype,
                     unused={"--dims": dims, "--feature-shape": feature_shape, "--input": input})
        return
    for flag, v in {"--input-mean": input_mean, "--input-std": input_std, "--keras-momentum": keras_momentum}.items():
        if v is not None:
            raise BncliError(f"{flag}: only used with --study convergence")
    cfg = cfgmod.load("running-stats", config, momentum=_momentum(momentum), dims=dims,
                      batch_size=batch_size, num_features=num_features, feature_shape=feature_shape,
                      iterations=iterations, input=input, eps=eps, seed=seed, device=device, dtype=dtype)
    run = _execute("running-stats", cfg, out, name)
    console = _console()
    if run.result is not None:
        console.print(report.running_table(run.result.table, cfg.dtype.value))
        console.print(report.running_summary(run.result.table, run.result.info["shapes"], cfg.dtype.value))
    _finish(console, run)


@contextmanager
def _sweep_progress(enabled: bool):
    """Runs done out of total, the current run and the ETA; yields sweep.run's callback."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[current]}"), transient=True,
                  console=_console()) as bar:
        task = None

        def update(done: int, total: int, current: str | None):
            nonlocal task
            if task is None:  # runs already done on --resume do not count towards the ETA
                task = bar.add_task("sweep", total=total, completed=done, current="")
            bar.update(task, completed=done, current=current or "")

        yield update


@app.command("sweep", short_help="Run a study over a grid of settings x seeds, then aggregate.")
def sweep_cmd(
    file: Annotated[Path, typer.Argument(help="Sweep file: study, base, grid, seeds.", show_default=False)],
    out: OutOpt = Path("results"),
    name: Annotated[Optional[str], typer.Option(help="Sweep name (default: the file's `name`, else its stem).",
                                                show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an existing sweep: skip runs already "
                                         "ok or diverged, redo the rest.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed run.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes running in parallel (spawned; torch threads "
                                         "are split between them).")] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    backend: Annotated[Backend, typer.Option(help="local: this machine; ray: one Ray task per run "
                                             '(needs pip install "bncli[ray]").')] = Backend.local,
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster to join: auto, or ray://HOST:10001 (default: start a local Ray instance).",
        show_default=False)] = None,
    cpus_per_run: Annotated[float, typer.Option(min=0.01, help="Ray: CPUs reserved per run (also its torch "
                                                "threads).")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(min=0.0, help="Ray: GPUs per run; 0.25 packs four runs on a "
                                                "GPU.")] = 0.0,
):
    """Run a study over a grid of settings times seeds; write summary.csv, aggregate.csv and a plot.

    Every grid point is checked before anything runs. Runs go to OUT/sweeps/NAME/runs/, one
    directory each, exactly as a single run writes it. Exit code 1 if any run failed, 130 if
    interrupted (finished runs are kept: add --resume to finish).

    Example: bncli sweep configs/sweeps/init_vs_norm.yaml --workers 2
    """
    from bncli import report
    from bncli import sweep as sweepmod

    ray = None
    if backend == Backend.ray:
        from bncli.ray_backend import RayOptions

        ray = RayOptions(address, cpus_per_run, gpus_per_run)
    elif address is not None:
        raise BncliError("--address: only with --backend ray")
    plan = sweepmod.plan(file, out, name)
    with _sigterm_as_interrupt(), _sweep_progress(progress) as cb:
        outcome = sweepmod.run(plan, resume=resume, fail_fast=fail_fast, workers=workers, progress=cb, ray=ray)
    console = _console()
    if (plan.dir / "summary.csv").exists():
        table = sweepmod.read_table(plan.dir / "summary.csv")
        console.print(report.sweep_summary(table, plan.keys, plan.study, title=f"sweep {plan.name}"))
        console.print(report.sweep_counts(table))
    if outcome.skipped:
        console.print(f"resumed: {outcome.skipped} of {len(plan.points)} runs were already done")
    for run_name, error in outcome.errors.items():
        console.print(f"[red]failed[/red] {run_name}: {error}", markup=True, highlight=False)
    if outcome.plot is not None:
        console.print(f"plot: {outcome.plot}")
    console.print(f"results: {plan.dir}")
    if outcome.interrupted:
        finished = sum(s in sweepmod.FINISHED for s in outcome.status.values())
        console.print(f"interrupted: {finished} of {len(plan.points)} runs finished; "
                      "rerun with --resume to finish")
        raise typer.Exit(130)
    if outcome.stopped:
        console.print("stopped at the first failure (--fail-fast)")
    if outcome.failed:
        raise typer.Exit(1)


@app.command("plot", short_help="Plot a metric against layer for runs and sweeps.")
def plot_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Run and/or sweep directories.", show_default=False)],
    metric: Annotated[Optional[str], typer.Option(
        help="Column to plot (any numeric column of the CSV; default: std, or running_mean and running_var).",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="PNG file (default: inside PATH when one is given, else in the current directory).",
        show_default=False)] = None,
):
    """Plot a metric against layer (log y) for runs and sweeps: one line per config, +-1 sd band.

    A diverged run ends with an x at its divergence layer. Running-stats results plot
    running_mean and running_var against iteration, with the formula's values dashed.

    Example: bncli plot results/sweeps/init_vs_norm --metric abs_max --out abs_max.png
    """
    from bncli import plot

    path = plot.plot(paths, out, metric)
    _console().print(f"plot: {path}")


@app.command("show", short_help="Re-render a saved run or sweep from its files.")
def show_cmd(
    path: Annotated[Path, typer.Argument(help="A run or sweep directory.", show_default=False)],
    every: Annotated[Optional[int], typer.Option(
        min=1, help="Show every K-th layer (depth study; default: all up to 100 layers, else about 50 rows).",
        show_default=False)] = None,
):
    """Re-render a saved run's table and summary, or a sweep's summary, from its files alone.

    Example: bncli show results/sweeps/init_vs_norm
    """
    from bncli import report
    from bncli import sweep as sweepmod

    console = _console()
    if not path.is_dir():
        raise BncliError(f"PATH: {path} is not a directory (give a run or sweep directory)")
    if sweepmod.is_sweep(path):
        study, keys, table = sweepmod.open_sweep(path)
        console.print(report.sweep_summary(table, keys, study, title=f"sweep {path.name}"))
        console.print(report.sweep_counts(table))
        return
    study, cfg, meta, table = sweepmod.open_run(path)
    status = meta.get("status")
    if table is not None and study == "depth-study":
        console.print(report.depth_table(table, every, meta.get("diverged_at")))
        console.print(report.depth_summary(table, meta.get("diverged_at"), status))
    elif table is not None and study == "running-stats-convergence":
        from bncli.studies.convergence import steps_within

        console.print(report.convergence_table(table, steps_within(table)))
    elif table is not None:
        dtype = str(cfg.get("dtype", "float32"))
        console.print(report.running_table(table, dtype))
        console.print(report.running_summary(table, meta.get("shapes") or {}, dtype))
    console.print(f"status: {status}" + (f" ({meta['error']})" if meta.get("error") else ""))


def main():
    app()
