"""The `deepspm-bluesky` command line (typer)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from deepspm_bluesky.collector import setting_up, settle

app = typer.Typer(help="Autonomous STM on Bluesky: survey, serve and train.", no_args_is_help=True)

CatalogOption = Annotated[
    Path | None,
    typer.Option("--catalog", help="Catalog directory (default: $DEEPSPM_CATALOG or per-user)."),
]


MIN_REVIEWED = 4  # reviewed images of each label that --from-catalog needs to train on


class BackendName(StrEnum):
    sim = "sim"
    labview = "labview"
    nanonis = "nanonis"


class ModeName(StrEnum):
    operational = "operational"
    training = "training"


CatalogLocationOption = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog folder, or a served Tiled URI (http://...) with "
                                   "--api-key (default: $DEEPSPM_CATALOG or per-user)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="DEEPSPM_API_KEY", help="API key of a served Tiled catalog."),
]


def _open_session(instrument, catalog: str | None, api_key: str | None):
    """`session.open_session`, its expected failures as one line and exit status 2."""
    from deepspm_bluesky.session import SessionError, open_session

    try:
        return open_session(instrument, catalog, api_key=api_key)
    except SessionError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _start_metadata(sample: str | None, md: list[str] | None) -> dict:
    """``--sample`` and ``--md key=value`` as start-document metadata (values read as JSON
    when they are JSON: numbers, true/false; otherwise as text)."""
    metadata = {}
    for item in md or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise typer.BadParameter(f"--md takes key=value, got {item!r}")
        try:
            metadata[key.strip()] = json.loads(value)
        except ValueError:
            metadata[key.strip()] = value
    if sample is not None:
        metadata["sample"] = sample
    return metadata


def _run_survey(session, *, images: int, mode: str, navigation_file: Path | None = None,
                state: Path | None = None, classifier: str = "pretrained",
                agent: str = "pretrained", md: dict | None = None) -> str:
    """Run `autonomous_survey` in the session, pausing on Ctrl-C; return the location.

    Prints where the data went; bad options (an unknown classifier, a corrupt state file)
    and a run that ends "fail" or "abort" exit with status 2 after one line naming why.
    """
    from deepspm_bluesky.plans import autonomous_survey
    from deepspm_bluesky.session import run_plan

    location = session.location
    try:
        plan = autonomous_survey(session.stm, max_images=images, mode=mode,
                                 classifier=classifier, agent=agent, md=md,
                                 state_dir=None if state is None else str(state),
                                 navigation_file=None if navigation_file is None
                                 else str(navigation_file))
    except (ValueError, OSError) as error:
        session.close()
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    settle()
    try:
        result = run_plan(session.engine, plan)
    except Exception as error:  # the run is closed (exit_status "fail", this reason)
        typer.echo(f"survey failed: {type(error).__name__}: {error}\ndata in {location}",
                   err=True)
        raise typer.Exit(2) from None
    finally:
        session.close()
    for run in session.writer.recovered:
        typer.echo(f"recovered run {run.uid} from the journal ({_count(run.stop)}), "
                   f"closed: {run.stop['exit_status']}")
    for uid in result.run_start_uids:
        _print_where(uid, location, session.engine.md.get("scan_id"))
    if result.exit_status != "success":
        typer.echo(f"survey ended {result.exit_status}: {result.reason}", err=True)
        raise typer.Exit(2)
    return location


def _count(stop: dict) -> str:
    return ", ".join(f"{n} {stream}" for stream, n in stop.get("num_events", {}).items())


def _print_where(uid: str, location: str, scan_id: int | None = None) -> None:
    typer.echo(f"run {uid}" + (f" (scan_id {scan_id})" if scan_id is not None else ""))
    typer.echo(f"data in {location}")
    typer.echo("read it back in Python:")
    typer.echo("  from deepspm_bluesky.data import open_catalog; "
               f"run = open_catalog({location!r})[{uid!r}]")
    typer.echo('  run["primary"]["stm_image"][0], run["primary"].base["internal"].read()')


@app.command()
def demo(
    images: Annotated[int, typer.Option(min=1, help="Images to take.")] = 50,
    catalog: CatalogLocationOption = None,
    api_key: ApiKeyOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated STM.")] = 0,
) -> None:
    """Survey a simulated STM and store every image and decision in Tiled."""
    with setting_up():
        from deepspm_bluesky.session import InstrumentSettings

        session = _open_session(InstrumentSettings(seed=seed), catalog, api_key)
        _run_survey(session, images=images, mode="operational")


@app.command()
def survey(
    backend: Annotated[BackendName, typer.Option(help="Instrument backend.")] = BackendName.sim,
    host: Annotated[str, typer.Option(help="Instrument server host.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Instrument server port.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Images to take.")] = 100,
    mode: Annotated[ModeName, typer.Option(help="Survey mode.")] = ModeName.operational,
    catalog: CatalogLocationOption = None,
    api_key: ApiKeyOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated STM.")] = 0,
    realtime: Annotated[
        float, typer.Option(min=0.0, help="Simulator only: 1 scans as slowly as a real STM.")
    ] = 0.0,
    state: Annotated[
        Path | None, typer.Option(help="State directory: resume, journal, STOP file.")
    ] = None,
    navigation_file: Annotated[
        Path | None, typer.Option(help="Keep only the navigation state here (see --state).")
    ] = None,
    outage_s: Annotated[
        float, typer.Option(min=0.0, help="Network backends: wait this long for a lost "
                            "instrument before giving up (seconds).")
    ] = 600.0,
    classifier: Annotated[
        str, typer.Option(help="Tip classifier: pretrained (every simulated surface), "
                               "pretrained-ag100 (MgPc on Ag(100) only), or a checkpoint file.")
    ] = "pretrained",
    agent: Annotated[
        str, typer.Option(help="Conditioning agent: pretrained, random, or a checkpoint file.")
    ] = "pretrained",
    sample: Annotated[str | None, typer.Option(help="Sample name, into the start document.")] = (
        None
    ),
    md: Annotated[
        list[str] | None, typer.Option(help="key=value into the start document (repeatable).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Keep this PNG current while the survey runs: latest "
                                  "image, P(good) over time, approach-area map.")
    ] = None,
    notify: Annotated[
        Path | None, typer.Option(help="Notification rules (TOML): e-mail or webhook when "
                                  "no good image comes, the survey ends, ...")
    ] = None,
) -> None:
    """Run an autonomous survey on the simulator or a real instrument."""
    if backend is not BackendName.sim and port is None:
        raise typer.BadParameter(f"--port is needed for the {backend.value} backend")
    metadata = _start_metadata(sample, md)
    with setting_up():
        from deepspm_bluesky.session import InstrumentSettings

        watchers = _watchers(plot, notify)
        instrument = InstrumentSettings(backend.value, host=host, port=port, seed=seed,
                                        realtime=realtime, outage_s=outage_s)
        _check_weights(classifier, agent)
        try:
            session = _open_session(instrument, catalog, api_key)
            for watcher in watchers:
                session.engine.subscribe(watcher)
            _run_survey(session, images=images, mode=mode.value,
                        navigation_file=navigation_file, state=state, classifier=classifier,
                        agent=agent, md=metadata)
        finally:
            for watcher in watchers:
                watcher.close()  # last PNG written, queued notices sent


def _check_weights(classifier: str, agent: str) -> None:
    """Exit 2 on an unknown or unusable classifier or agent before the catalog is opened
    (or created: a mistyped name left an empty catalog behind)."""
    from deepspm_bluesky.ml.named import agent_named, classifier_named

    try:
        classifier_named(classifier)
        agent_named(agent)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _watchers(plot: Path | None, notify: Path | None) -> list:
    """The `--plot` and `--notify` callbacks; a bad rules file exits 2 before any run."""
    from deepspm_bluesky.callbacks import RulesError, SurveyNotifier, SurveyPlotFile, load_rules

    rules = None
    if plot is not None and not plot.resolve().parent.is_dir():
        typer.echo(f"error: --plot {plot}: no directory {plot.resolve().parent}", err=True)
        raise typer.Exit(2)
    if notify is not None:
        try:
            rules = load_rules(notify)
        except RulesError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
    return ([] if plot is None else [SurveyPlotFile(plot)]) + (
        [] if rules is None else [SurveyNotifier(rules)])


def install_profile() -> Path:
    """Install or update the ``profile_deepspm`` startup file (`profiles.ipython`)."""
    from deepspm_bluesky.profiles.ipython import install_profile as install

    return install()


@app.command()
def ipython(catalog: CatalogLocationOption = None, api_key: ApiKeyOption = None) -> None:
    """Start IPython with the deepspm profile: RE, stm, catalog, autonomous_survey."""
    profile_dir = install_profile()
    env = dict(os.environ)
    if catalog is not None:
        env["DEEPSPM_CATALOG"] = catalog
    if api_key is not None:
        env["DEEPSPM_API_KEY"] = api_key
    command = [sys.executable, "-m", "IPython", f"--profile-dir={profile_dir}"]
    raise typer.Exit(subprocess.call(command, env=env))


@app.command("qserver-startup")
def qserver_startup() -> None:
    """Print the queue-server startup folder: start-re-manager --startup-dir "$(...)"."""
    typer.echo(resources.files("deepspm_bluesky.profiles").joinpath("qserver"))


@app.command()
def serve(
    catalog: CatalogOption = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TILED_SINGLE_USER_API_KEY", help="API key (random if unset)."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(envvar="DEEPSPM_DATABASE",
                     help="PostgreSQL URI (postgresql://user:password@host:port/name) for the "
                          "metadata and tables; the array files stay in --catalog."),
    ] = None,
) -> None:
    """Serve the catalog over HTTP with Tiled (same files as the embedded mode), or a
    facility catalog with its metadata in PostgreSQL."""
    from deepspm_bluesky.data import CatalogError, default_catalog, redact, run_app, serving_app

    key = api_key or secrets.token_hex(16)
    location = str(catalog) if catalog is not None else default_catalog()
    try:
        web_app = serving_app(location, api_key=key, database=database)
    except CatalogError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    where = location if database is None else f"{location} with metadata in {redact(database)}"
    typer.echo(f"serving {where} at http://{host}:{port}  api key: {key}")
    run_app(web_app, host=host, port=port)


@app.command()
def watch(
    catalog: CatalogOption = None,
    tiled: Annotated[
        str | None, typer.Option(help="A served Tiled instead of a folder: its http(s) URI.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TILED_API_KEY", help="API key of the served Tiled "
                                                              "(never shown on the page).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (local only by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port of the page.")] = 8080,
) -> None:
    """Watch the running survey in a web browser: its state, latest image, P(good), map,
    actions and past surveys; mark verdicts wrong to teach the classifier."""
    if catalog is not None and tiled is not None:
        raise typer.BadParameter("give --catalog DIR or --tiled URI, not both")
    if tiled is not None and not tiled.startswith(("http://", "https://")):
        raise typer.BadParameter(f"--tiled must be an http(s) URI, got {tiled!r}")
    with setting_up():
        from deepspm_bluesky.data import default_catalog, open_catalog
        from deepspm_bluesky.watch import serve_watch

        location = tiled or str(catalog if catalog is not None else default_catalog())
        try:
            client = open_catalog(location, api_key=api_key)
        except Exception as error:  # unreachable server, refused key, unreadable folder
            typer.echo(f"error: cannot open {location}: {type(error).__name__}: {error}",
                       err=True)
            raise typer.Exit(2) from None
        typer.echo(f"watching {location} at http://{host}:{port}  (Ctrl-C stops)")
        serve_watch(client, host=host, port=port, title=location)


class ExportFormat(StrEnum):
    files = "files"
    labels = "labels"
    gwy = "gwy"
    npz = "npz"
    png = "png"


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run uid (or its first characters), or 'latest'.")],
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = Path("."),
    catalog: CatalogOption = None,
    format: Annotated[
        ExportFormat, typer.Option(help="gwy: Gwyddion file, one channel per image, metres; "
                                        "npz: images with their coordinates; png: contact "
                                        "sheet; labels: images into good/ and bad/ by verdict; "
                                        "files: every stream as .csv and .npy.")
    ] = ExportFormat.files,
) -> None:
    """Write a run for SPM software (Gwyddion .gwy), numpy (.npz), people (a PNG contact
    sheet), or the classifier (good/ and bad/ folders: fix the misjudged ones, then
    train-classifier --init pretrained --data); never creates or changes the catalog."""
    from deepspm_bluesky.data import CatalogError, open_catalog

    try:
        node = _find_run(open_catalog(catalog, create=False), run)
        written = _export_as(format, node, out)
    except (CatalogError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    for line in written:
        typer.echo(line)


def _find_run(client, run: str):
    """The run `run` names (uid, its first characters, or 'latest'), or a KeyError."""
    try:
        return client[-1] if run == "latest" else client[run]
    except (KeyError, IndexError):
        raise KeyError(f"no run {run!r} in the catalog") from None


def _export_as(format: ExportFormat, node, out: Path) -> list[str]:
    """Export `node` into `out` as `format`; the lines to print."""
    from deepspm_bluesky.contact_sheet import draw_contact_sheet
    from deepspm_bluesky.export import export_labels, export_run, write_npz
    from deepspm_bluesky.gwyddion import write_gwy
    from deepspm_bluesky.surveys import survey_dataset

    if format == ExportFormat.labels:
        return [f"{len(paths)} images in {Path(out) / name}"
                for name, paths in export_labels(node, out).items()]
    if format == ExportFormat.files:
        return [f"wrote {path}" for path in export_run(node, out)]
    dataset = survey_dataset(node)
    writer = {ExportFormat.gwy: write_gwy, ExportFormat.npz: write_npz,
              ExportFormat.png: draw_contact_sheet}[format]
    out.mkdir(parents=True, exist_ok=True)
    path = writer(dataset, out / f"{dataset.attrs['uid'][:8]}.{format.value}")
    return [f"wrote {path} ({dataset.sizes['image']} images)"]


@app.command()
def classify(
    files: Annotated[list[Path], typer.Argument(help=".sxm or .npy files.")],
    weights: Annotated[
        Path | None, typer.Option(help="Classifier checkpoint (default: the shipped one).")
    ] = None,
    frame_nm: Annotated[
        float | None, typer.Option(help="Frame side of .npy images, in nm.")
    ] = None,
) -> None:
    """Judge the tip from image files: checks, P(good), familiarity and verdict per image."""
    from deepspm_bluesky.ml import TipClassifier
    from deepspm_bluesky.ml.classify_files import classify_file

    classifier = TipClassifier.pretrained() if weights is None else TipClassifier.load(weights)
    for path in files:
        try:
            verdicts = classify_file(path, classifier, frame_nm=frame_nm)
        except (ValueError, OSError) as error:
            raise typer.BadParameter(str(error)) from None
        for verdict in verdicts:
            typer.echo(verdict.line())


@app.command()
def bench(
    names: Annotated[
        list[str] | None, typer.Argument(help="bench_* modules (default: all).")
    ] = None,
) -> None:
    """Run the benchmarks of a source checkout; each prints ratios against its reference."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise typer.BadParameter(f"no benchmarks/ beside the package in {root}: needs a checkout")
    command = [sys.executable, "-m", "benchmarks", *(names or [])]
    raise typer.Exit(subprocess.call(command, cwd=root))


@app.command("labview-server")
def labview_server(
    port: Annotated[int, typer.Option(help="TCP port (DeepSPM's default is 50008).")] = 50008,
    seed: Annotated[int, typer.Option(help="Seed of the simulated STM.")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind (local only by default).")] = (
        "127.0.0.1"
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log every request and reply with its time.")
    ] = False,
) -> None:
    """Serve the simulated STM over the DeepSPM LabVIEW protocol until Ctrl-C."""
    from deepspm_bluesky.servers.labview import serve_labview

    typer.echo(f"DeepSPM LabVIEW protocol server (simulator, seed {seed}) on {host}:{port}")
    serve_labview(port=port, seed=seed, host=host, verbose=verbose)


@app.command("nanonis-server")
def nanonis_server(
    port: Annotated[int, typer.Option(help="TCP port (Nanonis's first is 6501).")] = 6501,
    seed: Annotated[int, typer.Option(help="Seed of the simulated STM.")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind (local only by default).")] = (
        "127.0.0.1"
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log every command and response with its time.")
    ] = False,
) -> None:
    """Serve the simulated STM over the Nanonis TCP protocol until Ctrl-C."""
    from deepspm_bluesky.servers.nanonis import serve_nanonis

    typer.echo(f"Nanonis TCP protocol server (simulator, seed {seed}) on {host}:{port}")
    serve_nanonis(port=port, seed=seed, host=host, verbose=verbose)


@app.command("train-classifier")
def train_classifier(
    output: Annotated[Path, typer.Option(help="Checkpoint to write (or to evaluate).")] = Path(
        "tip_classifier.pt"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps at most.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of data, weights and batches.")] = 0,
    data: Annotated[
        Path | None, typer.Option(help="Folder of good/ and bad/ .npy images (default: sim).")
    ] = None,
    from_catalog: Annotated[
        Path | None, typer.Option(help="Fine-tune the shipped weights on the images reviewed "
                                       "on the watch page (corrected and confirmed) in this "
                                       "catalog folder.")
    ] = None,
    architecture: Annotated[
        str, typer.Option(help="compact, compact-lines, lean, lean-lines or deepspm.")
    ] = "compact",
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="Adam's initial learning rate (cosine decay).")
    ] = 1e-3,
    rotations: Annotated[
        bool, typer.Option(help="Augment with 90-degree turns as well as flips.")
    ] = True,
    eval_every: Annotated[
        int, typer.Option(min=1, help="Steps between validations (early stopping).")
    ] = 100,
    train_images: Annotated[int, typer.Option(min=2, help="Simulated training images.")] = 16000,
    test_images: Annotated[int, typer.Option(min=2, help="Simulated held-out images.")] = 4000,
    fine_tune: Annotated[bool, typer.Option(help="Start from the shipped weights.")] = False,
    init: Annotated[
        str, typer.Option(help="scratch, or pretrained: fine-tune the shipped weights.")
    ] = "scratch",
    families: Annotated[
        str | None, typer.Option(help="Simulated surface families, comma-separated; 'all' "
                                      "for every family, 'deepspm' for the default sample "
                                      "(MgPc on Ag(100) at 1 V and 10 nm, the default).")
    ] = None,
    evaluate_only: Annotated[
        bool, typer.Option(help="Only evaluate OUTPUT (or the shipped weights).")
    ] = False,
    fit_familiarity: Annotated[
        bool, typer.Option(help="With --evaluate-only: fit the training images' feature "
                                "density and save it with the weights into OUTPUT.")
    ] = False,
    roc_plot: Annotated[Path | None, typer.Option(help="Save the test ROC curve here.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    time_limit: Annotated[
        float | None, typer.Option(help="Stop training after this many minutes.")
    ] = None,
) -> None:
    """Train the tip classifier on simulated (or your own) images; print test scores."""
    from deepspm_bluesky.ml.data import DEEPSPM_SAMPLE
    from deepspm_bluesky.ml.training import TrainingSettings
    from deepspm_bluesky.ml.workflow import DataSizes, train_and_evaluate
    from deepspm_bluesky.sim import FAMILIES

    if init not in ("scratch", "pretrained"):
        raise typer.BadParameter(f"--init must be scratch or pretrained, got {init!r}")
    chosen = None
    if families is not None:
        named = [f.strip() for f in families.split(",")]
        chosen = tuple(g for f in named for g in (FAMILIES if f == "all" else (f,)))
        known = (*FAMILIES, DEEPSPM_SAMPLE)
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise typer.BadParameter(f"unknown families {unknown}; known: all, "
                                     f"{', '.join(known)}")
    if from_catalog is not None:
        if data is not None:
            raise typer.BadParameter("give --data FOLDER or --from-catalog DIR, not both")
        data = _reviewed_images(from_catalog, output.with_name(output.stem + "_reviewed"))
        init = "pretrained"
    settings = TrainingSettings(architecture=architecture, seed=seed, max_steps=steps,
                                learning_rate=learning_rate, rotations=rotations,
                                eval_every=eval_every, threads=threads,
                                time_limit_s=None if time_limit is None else 60 * time_limit)
    sizes = DataSizes(train=train_images, validation=max(2, train_images // 8), test=test_images,
                      families=chosen)
    train_and_evaluate(output, settings=settings, sizes=sizes, data_folder=data,
                       fine_tune=fine_tune or init == "pretrained", evaluate_only=evaluate_only,
                       fit_familiarity=fit_familiarity, roc_plot=roc_plot, echo=typer.echo)


def _reviewed_images(catalog: Path, folder: Path) -> Path:
    """Export the reviewed images of a catalog into `folder` (good/, bad/); exit 2 when
    there are too few of either label to train on."""
    from deepspm_bluesky.data import open_catalog
    from deepspm_bluesky.watch import export_reviewed

    written = export_reviewed(open_catalog(catalog), folder)
    counts = {name: len(paths) for name, paths in written.items()}
    typer.echo(f"reviewed images of {catalog}: {counts['good']} good, {counts['bad']} bad "
               f"(in {folder})")
    if min(counts.values()) < MIN_REVIEWED:
        typer.echo(f"error: fine-tuning needs at least {MIN_REVIEWED} reviewed images of each "
                   "label; mark more verdicts wrong or right on the watch page "
                   "(deepspm-bluesky watch)", err=True)
        raise typer.Exit(2)
    return folder


@app.command("sim-gallery")
def sim_gallery(
    output: Annotated[Path, typer.Argument(help="PNG file to write.")],
    seed: Annotated[int, typer.Option(help="Seed of the simulated STM.")] = 0,
    size_nm: Annotated[float, typer.Option(min=1.0, help="Frame side in nm.")] = 10.0,
    pixels: Annotated[int, typer.Option(min=8, help="Pixels per line.")] = 64,
) -> None:
    """Draw one simulated image per tip state (and a dip's crater) into a PNG."""
    from deepspm_bluesky.sim.gallery import draw_gallery

    typer.echo(f"gallery in {draw_gallery(output, seed=seed, size_nm=size_nm, pixels=pixels)}")


@app.command("train-agent")
def train_agent(
    output: Annotated[Path, typer.Option(help="Policy to write (the best evaluation's).")] = (
        Path("conditioning_agent.pt")
    ),
    transitions: Annotated[int, typer.Option(min=1, help="Transitions to collect.")] = 20000,
    envs: Annotated[int, typer.Option(min=1, help="Simulated STMs stepped together.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of weights, exploration and the STMs.")] = 0,
    eval_every: Annotated[
        int, typer.Option(min=0, help="Transitions between evaluations (0: at the end).")
    ] = 2500,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Episodes per evaluation.")] = 100,
    screen_episodes: Annotated[
        int, typer.Option(min=1, help="Episodes per action to find the best fixed one.")
    ] = 30,
    learning_starts: Annotated[int, typer.Option(min=1, help="Transitions before learning.")] = (
        1000
    ),
    epsilon_steps: Annotated[int, typer.Option(min=1, help="Transitions of epsilon decay.")] = (
        5000
    ),
    dueling: Annotated[bool, typer.Option(help="Dueling Q head.")] = True,
    train_trunk: Annotated[bool, typer.Option(help="Also train the CNN trunk (slow).")] = False,
    fresh_trunk: Annotated[
        bool, typer.Option(help="Start the trunk from random weights, not the classifier.")
    ] = False,
    judge: Annotated[str, typer.Option(help="classifier (as the survey) or truth.")] = (
        "classifier"
    ),
    resume: Annotated[
        Path | None, typer.Option(help="Continue from a full agent state (.state.pt).")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Stop collecting after this many minutes.")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads of the learner.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    fixed_action: Annotated[
        str | None, typer.Option(help="Fixed action to compare with (default: the best).")
    ] = None,
) -> None:
    """Train the conditioning agent (double DQN) on the simulated STM; print a table
    against the random and best-fixed-action baselines on fixed evaluation seeds."""
    from deepspm_bluesky.ml.agent_training import AgentTrainingSettings
    from deepspm_bluesky.ml.agent_training import train_agent as train
    from deepspm_bluesky.ml.conditioning_agent import AgentSettings, ConditioningAgent

    if resume is not None:
        agent = ConditioningAgent.load(resume, explore=True)
    else:
        settings = AgentSettings(learning_starts=learning_starts, epsilon_steps=epsilon_steps,
                                 dueling=dueling, train_trunk=train_trunk, seed=seed)
        agent = ConditioningAgent(settings=settings,
                                  trunk="fresh" if fresh_trunk else "classifier")
    training = AgentTrainingSettings(
        transitions=transitions, envs=envs, asynchronous=envs > 1, eval_every=eval_every,
        eval_episodes=eval_episodes, screen_episodes=screen_episodes, judge=judge,
        threads=threads, seed=seed, time_limit_s=None if time_limit is None else 60 * time_limit,
        fixed_action=fixed_action)
    result = train(agent, training, output=output, progress=progress, echo=typer.echo)
    typer.echo(result.table())
    typer.echo(f"policy in {output} (best evaluation at {result.best_transitions} transitions); "
               f"full state in {output.with_name(output.stem + '.state.pt')}; "
               f"{result.wall_s / 60:.1f} min")
