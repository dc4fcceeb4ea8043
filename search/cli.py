"""The `tunefleet` command line. Heavy imports (torch, transformers) happen
inside the commands that train, so --help, status and friends stay fast."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from search import views
from search.spec import TRAIN_ON, StudySpec
from spaces.methods import METHODS
from spaces.errors import InputError
from storage import StorageError


def _default(name: str):
    """The study spec's own default: the CLI states none of its own."""
    return StudySpec.__dataclass_fields__[name].default

storage_option = click.option(
    "--storage", "storage_url", metavar="URL", envvar="TUNEFLEET_STORAGE",
    help="Optuna storage: postgresql://user:pass@host/db, sqlite:///file.db or a journal file path. "
         "Default: $TUNEFLEET_STORAGE, else the embedded journal file .tunefleet/journal.log.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _read_template(_ctx, _param, path):
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"chat template {path}: {e.strerror}") from None


def dataset_options(command=None, *, training=True):
    """What to read from the dataset and (training) how its chat examples carry loss and where
    the eval examples come from (spaces/dataset.py); the --*-field options reach the command as
    one `columns` mapping."""
    if command is None:
        return functools.partial(dataset_options, training=training)
    fields = ("text", "prompt", "completion", "messages")

    @functools.wraps(command)
    def with_columns(*args, **kwargs):
        columns = {f: kwargs.pop(f"{f}_field") for f in fields if kwargs.get(f"{f}_field")}
        for f in fields:
            kwargs.pop(f"{f}_field", None)
        return command(*args, columns=columns, **kwargs)

    options = [click.option("--dataset-split", help="Split to train on (default: train, or the only one)."),
               *[click.option(f"--{f}-field", metavar="COLUMN", help=f"The dataset's column holding '{f}'.")
                 for f in fields]]
    options += [] if not training else [
        click.option("--eval-dataset", help="Eval examples instead of a held-out share: a split of the "
                                            "dataset, or a file, directory or cached hub id."),
        click.option("--train-on", type=click.Choice(TRAIN_ON), default=_default("train_on"), show_default=True,
                     help="Chat data: the loss on the assistant turns, or on every token."),
        click.option("--chat-template", type=click.Path(dir_okay=False), callback=_read_template,
                     help="A Jinja chat template file, for tokenizers that have none."),
        click.option("--packing", is_flag=True, help="Padding-free packing: a micro-batch trains as one row, "
                                                     "each example attending only to itself."),
    ]
    for option in reversed(options):
        with_columns = option(with_columns)
    return with_columns


def _open(url):
    import optuna

    from storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_storage(url)


def _load(url, name):
    from search.study import load

    return load(_open(url), name)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunefleet", prog_name="tunefleet")
def cli():
    """tunefleet: hyperparameter search for LLM fine-tuning (full, LoRA, QLoRA, prefix tuning)."""


@cli.group()
def study():
    """Create studies."""


@study.command("create")
@click.argument("name")
@click.option("--model", required=True, help="Model directory saved with save_pretrained, or a hub id "
                                             "(org/name) in the local Hugging Face cache.")
@click.option("--revision", help="With a hub id: branch, tag or commit of the cached snapshot (default main).")
@click.option("--dataset", required=True, help="Examples with text, prompt+completion or messages: JSONL, JSON, CSV, "
                                               "Parquet, a save_to_disk directory, or a cached hub dataset id.")
@dataset_options
@click.option("--method", required=True, help=f"One of {', '.join(METHODS)}.")
@click.option("--n-trials", default=_default("n_trials"), show_default=True, help="Configurations tried, over all workers.")
@click.option("--epochs", default=_default("epochs"), help="Passes over the data per trial, fractions allowed (default: the "
                                            "seeds' 5 / 3 / 2 by dataset size); steps follow from each trial's batch.")
@click.option("--max-steps", default=_default("max_steps"), help="Instead of --epochs: the same optimizer steps for every trial.")
@click.option("--eval-steps", default=_default("eval_steps"), help="With --max-steps: evaluate every N steps (default max-steps // 10).")
@click.option("--max-tokens", default=_default("max_tokens"), help="Stop starting trials once all trials trained this many tokens (0: none).")
@click.option("--seq-len", default=_default("seq_len"), show_default=True, help="Tokens per example.")
@click.option("--max-micro-batch", default=_default("max_micro_batch"), show_default=True, help="Largest per-device micro-batch.")
@click.option("--sampler", default=_default("sampler"), show_default=True,
              help="prior (the documents' priors, then TPE steered by them), tpe, random or gp.")
@click.option("--pruner", default=_default("pruner"), show_default=True,
              help="asha (pause at rungs, promote the best), median, hyperband or none.")
@click.option("--space", "space_file", type=click.Path(), help="YAML that narrows, widens or fixes hyperparameters.")
@click.option("--model-params", type=float, help="Model size in parameters (default: counted from the weights).")
@click.option("--dataset-size", type=int, help="Examples, for the batch-size tier (default: counted).")
@click.option("--seed", default=_default("seed"), show_default=True, help="Seed of the train/eval split and training.")
@click.option("--trust-remote-code", is_flag=True, help="Run the model repository's own code.")
@click.option("--lr-from-finder", is_flag=True, help="Centre the learning-rate prior on a range test's suggestion.")
@click.option("--max-gpu-hours", default=_default("max_gpu_hours"), help="Stop starting trials after this many GPU-hours (0: none).")
@click.option("--max-wall-hours", default=_default("max_wall_hours"), help="Stop starting trials this long after creation (0: none).")
@click.option("--target-value", type=float, help="Stop starting trials once an eval loss reaches this.")
@click.option("--lease-seconds", default=_default("lease_seconds"), show_default=True,
              help="A trial whose worker stops renewing its lease this long is resumed elsewhere.")
@click.option("--max-resumes", default=_default("max_resumes"), show_default=True, help="Times one trial may be resumed after lost leases.")
@click.option("--stall-seconds", default=_default("stall_seconds"), show_default=True,
              help="A trial with no step this long (or 10x its longest gap) is hung: resumed elsewhere.")
@click.option("--max-trial-hours", default=_default("max_trial_hours"), help="Stop any one trial after this many hours (0: none).")
@click.option("--keep-best", type=click.IntRange(min=0),
              help="The best K complete trials keep their best checkpoint, to export (default: 3 adapters, 1 full).")
@click.option("--resume", is_flag=True, help="Continue an existing study of that name (and raise its budget).")
@storage_option
@json_option
def study_create(name, model, revision, dataset, dataset_split, eval_dataset, columns, train_on, chat_template, packing,
                 method, n_trials, epochs, max_steps, eval_steps, max_tokens, seq_len,
                 max_micro_batch,
                 sampler, pruner, space_file, model_params, dataset_size, seed, trust_remote_code, lr_from_finder,
                 max_gpu_hours, max_wall_hours, target_value, lease_seconds, max_resumes, stall_seconds, max_trial_hours,
                 keep_best, resume, storage_url, as_json):
    """Validate the inputs, store the study spec and queue the prior's mode first."""
    from search.study import create
    from workers.inputs import spec_from_inputs
    from spaces.overrides import read_space_file

    spec = spec_from_inputs(_local_or_id(model), _local_or_id(dataset), method, revision=revision,
                            dataset_split=dataset_split, eval_dataset=eval_dataset, columns=columns,
                            train_on=train_on, chat_template=chat_template, packing=packing, n_trials=n_trials, epochs=epochs, max_steps=max_steps, eval_steps=eval_steps,
                            max_tokens=max_tokens, seq_len=seq_len,
                            max_micro_batch=max_micro_batch, sampler=sampler, pruner=pruner, seed=seed,
                            trust_remote_code=trust_remote_code, n_params=int(model_params or 0),
                            n_examples=dataset_size, space_overrides=read_space_file(space_file),
                            lease_seconds=lease_seconds, max_resumes=max_resumes, stall_seconds=stall_seconds,
                            max_trial_hours=max_trial_hours, max_gpu_hours=max_gpu_hours,
                            max_wall_hours=max_wall_hours, target_value=target_value, keep_best=keep_best)
    if lr_from_finder:
        import dataclasses

        from search.study import space_of
        from workers.lr_finder import centre_override, run_for_spec

        if space_of(spec)["learning_rate"].choices is not None:  # checked before minutes of training
            raise InputError("--lr-from-finder: --space fixes the learning rate; drop one of the two")
        found = run_for_spec(spec)
        if found.suggestion is None:
            raise InputError("the learning-rate range test diverged at once; no suggestion to centre on")
        spec = dataclasses.replace(spec, space_overrides=centre_override(spec, found.suggestion))
        click.echo(f"learning-rate range test suggests {found.suggestion:.2e}: the prior is centred there", err=True)
    created = create(_open(storage_url), name, spec, resume=resume)
    queued = sum(t.state.name == "WAITING" for t in created.get_trials(deepcopy=False))
    if as_json:
        return _print_json({"study": name, "spec": spec.to_dict(), "queued": queued})
    click.echo(views.created(name, spec, queued))


@study.command("stop")
@click.argument("name")
@storage_option
def study_stop(name, storage_url):
    """Drain study NAME: running trials finish, no new one starts (study create --resume starts it again)."""
    from search.budget import stop
    from search.study import load

    study, _ = load(_open(storage_url), name)
    stop(study, "stopped by request")
    running = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    click.echo(f"study '{name}' stopped: {running} running trial(s) finish, no new trial starts")


@study.command("delete")
@click.argument("name")
@click.option("--artifacts", type=click.Path(file_okay=False), help="Artifact directory (default: beside the storage).")
@storage_option
def study_delete(name, artifacts, storage_url):
    """Delete study NAME, its trials and their checkpoints, until it is gone."""
    from search.study import delete
    from storage import backend

    storage = _open(storage_url)
    removed = delete(storage, backend(storage_url).artifacts(storage, artifacts), name)
    click.echo(f"study '{name}' deleted, with {removed} artifact(s)")


@cli.command()
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes over the studies.")
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a check).")
@click.option("--serve", metavar="HOST:PORT",
              help="Serve the storage and artifacts to workers (they take --storage grpc://HOST:PORT).")
@click.option("--connections", default=16, show_default=True, type=click.IntRange(2, 1000),
              help="Database connections of this process's storage calls, whatever the number of workers it serves.")
@click.option("--transfers", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Checkpoint uploads and downloads served at once, on threads and connections of their own; "
                   "workers beyond wait their turn, and lease renewals and claims never wait behind them.")
@click.option("--artifacts", type=click.Path(file_okay=False), help="Artifact directory to serve (default: beside the storage).")
@storage_option
def coordinator(interval, once, serve, connections, transfers, artifacts, storage_url):
    """Re-queue trials of dead workers, queue trials for live ones, stop studies at their budgets."""
    import optuna

    from search.coordinator import run
    from storage import backend
    from storage.urls import grpc_address

    where = backend(storage_url)
    address = None
    if serve:
        try:
            address = grpc_address(f"grpc://{serve}")
        except ValueError:
            raise InputError(f"--serve takes HOST:PORT, not '{serve}'") from None
        if where.kind != "postgresql":
            raise InputError("--serve needs a PostgreSQL storage (--storage postgresql://...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.exit(run(where.open(connections), where, interval, once, address, artifacts, threads=connections + 4,
                 transfers=transfers))


def _local_or_id(source: str) -> str:
    """A file or directory as an absolute path (workers may start elsewhere); a hub id as spelled."""
    return str(Path(source).absolute()) if Path(source).exists() else source


@cli.command()
@click.option("--model", required=True, help="Model directory or cached hub id (config and weights' headers are read).")
@click.option("--revision", help="With a hub id: branch, tag or commit of the cached snapshot (default main).")
@click.option("--method", required=True, help=f"One of {', '.join(METHODS)}.")
@click.option("--dataset", required=True, help="Dataset file, directory or cached hub id (its examples are counted).")
@dataset_options(training=False)
@click.option("--gpu-memory", required=True, type=float, help="Memory of one GPU, in GB.")
@click.option("--seq-len", default=2048, show_default=True, help="Tokens per example.")
@click.option("--model-params", type=float, help="Model size in parameters (default: counted from the weights).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Effective batch to recommend for (default: the batch prior's centre for the dataset size).")
@click.option("--gpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs one trial trains on (FSDP shards full fine-tuning over them; adapters train under DDP).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True,
              help="json/yaml: ready TrainingArguments, peft and quantization configs.")
def suggest(model, revision, method, dataset, dataset_split, columns, gpu_memory, seq_len, model_params, batch_size,
            gpus_per_trial, fmt):
    """Recommend one configuration from the priors, with its peak-memory estimate.

    Exits 1 when the method does not fit the GPU (and says what does)."""
    from spaces.dataset import read_dataset
    from spaces.hub import resolve
    from spaces.model import dimensions, parameter_count, read_model_config
    from spaces.recommend import recommend

    if method not in METHODS:
        raise InputError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    if gpu_memory <= 0 or seq_len < 8:
        raise InputError("--gpu-memory must be positive and --seq-len at least 8")
    path = resolve(model, revision)
    dims = dimensions(read_model_config(path))
    n_params, n_embedding = parameter_count(path)
    if model_params:
        n_embedding, n_params = round(n_embedding * model_params / n_params), int(model_params)
    _, records = read_dataset(dataset, dataset_split, columns)
    try:
        result = recommend(method, dims, n_params, n_embedding, len(records), gpu_memory, seq_len, batch_size,
                           gpus_per_trial)
    except ValueError as e:  # an effective batch that does not split over the GPUs
        raise InputError(f"{e} (pick --batch-size a multiple of --gpus-per-trial)") from None
    click.echo(views.suggestion(result, fmt))
    sys.exit(0 if result["memory"]["fits"] else 1)


@cli.command("lr-find")
@click.option("--model", required=True, help="Model directory saved with save_pretrained, or a cached hub id.")
@click.option("--revision", help="With a hub id: branch, tag or commit of the cached snapshot (default main).")
@click.option("--dataset", required=True, help="Dataset file, directory or cached hub id.")
@dataset_options
@click.option("--method", required=True, help=f"One of {', '.join(METHODS)}.")
@click.option("--steps", default=100, show_default=True, help="Optimizer steps of the test.")
@click.option("--min-lr", default=1e-7, show_default=True)
@click.option("--max-lr", default=1.0, show_default=True)
@click.option("--seq-len", default=512, show_default=True, help="Tokens per example.")
@click.option("--out", default="lr_find.png", show_default=True, type=click.Path(), help="Where the plot goes.")
@json_option
def lr_find(model, revision, dataset, dataset_split, eval_dataset, columns, train_on, chat_template, packing, method, steps, min_lr, max_lr, seq_len, out, as_json):
    """Learning-rate range test: step the optimizer at exponentially rising rates, smooth the loss
    on a log axis, stop on divergence, restore the model; plot it and suggest a rate."""
    if steps < 3 or not 0 < min_lr < max_lr:
        raise InputError("--steps must be at least 3 and 0 < --min-lr < --max-lr")
    from workers.inputs import spec_from_inputs
    from workers.lr_finder import plot, run_for_spec

    spec = spec_from_inputs(_local_or_id(model), _local_or_id(dataset), method, seq_len=seq_len, revision=revision,
                            dataset_split=dataset_split, eval_dataset=eval_dataset, columns=columns,
                            train_on=train_on, chat_template=chat_template, packing=packing)
    found = run_for_spec(spec, steps, min_lr, max_lr)
    plot(found, Path(out))
    if as_json:
        return _print_json({"suggestion": found.suggestion, "stopped_early": found.stopped_early,
                            "lrs": found.lrs, "smoothed_losses": found.losses, "plot": str(out)})
    click.echo(views.lr_found(found, min_lr, out))


@cli.command()
@click.option("--steps", default=1000, show_default=True, help="Optimizer steps of the run.")
@click.option("--warmup-ratio", default=0.03, show_default=True, help="Share of the steps spent warming up.")
@click.option("--learning-rate", default=2e-4, show_default=True, help="Peak learning rate.")
@click.option("--out", default="schedules.png", show_default=True, type=click.Path(), help="Where the plot goes.")
def schedules(steps, warmup_ratio, learning_rate, out):
    """Plot the learning-rate schedules for a run of this length, as the Trainer runs them."""
    if steps < 1 or not 0 <= warmup_ratio < 1 or learning_rate <= 0:
        raise InputError("--steps must be positive, --warmup-ratio in [0, 1), --learning-rate positive")
    from workers.schedules import curves, plot

    warmup = round(warmup_ratio * steps)
    lr_curves = curves(steps, warmup, learning_rate)
    plot(lr_curves, warmup, Path(out))
    click.echo(views.schedules(lr_curves, warmup, steps, Path(out)))


artifacts_option = click.option(
    "--artifacts", type=click.Path(file_okay=False),
    help="Directory for checkpoints and curves, shared by all machines (default: beside the journal, "
         "or in the PostgreSQL database).")


@cli.command()
@click.argument("name")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (default: all).")
@storage_option
@artifacts_option
@click.option("--inject-stall-at", type=click.IntRange(min=1), hidden=True,
              help="Tests: the first trial's training hangs at this training forward pass.")
@click.option("--inject-oom-above", type=click.IntRange(min=0), hidden=True,
              help="Tests: raise torch's out-of-memory error in training above this micro-batch.")
@click.option("--gpus", help="GPUs of this machine to use, e.g. 0,1,2,3 or 0-7: one worker process per GPU, "
                             "or per --gpus-per-trial GPUs (default: one process, all it sees).")
@click.option("--gpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train each trial on N ranks (DDP for adapters, FSDP for full fine-tuning), one per GPU; "
                   "without CUDA, N CPU ranks over gloo.")
def worker(name, threads, storage_url, artifacts, inject_stall_at, inject_oom_above, gpus, gpus_per_trial):
    """Claim and train trials of study NAME until its budget is spent."""
    if gpus or gpus_per_trial > 1:
        from workers.multi_gpu import groups_of, parse_gpus, run_groups

        try:
            indices = parse_gpus(gpus) if gpus else None
            groups_of(indices, gpus_per_trial)
        except ValueError as e:
            raise InputError(str(e)) from None
        forwarded = [name] + [a for flag, value in (("--threads", threads), ("--storage", storage_url),
                                                    ("--artifacts", artifacts), ("--inject-oom-above", inject_oom_above))
                              if value is not None for a in (flag, str(value))]
        sys.exit(run_groups(forwarded, indices, gpus_per_trial))
    from workers.worker import run

    faults = None
    if inject_oom_above is not None:
        from workers.faults import OutOfMemoryAbove

        faults = OutOfMemoryAbove(inject_oom_above)
    if inject_stall_at is not None:
        from workers.faults import StallAt

        faults = StallAt(inject_stall_at)
    sys.exit(run(name, storage_url, threads, artifacts, faults))


@cli.command("ray-workers")
@click.argument("name")
@click.option("--address", required=True, help="The existing Ray cluster: HOST:PORT of its head, ray://... or auto.")
@click.option("--num-workers", type=click.IntRange(min=1), help="Place this many workers.")
@click.option("--fill", is_flag=True,
              help="Place as many workers as the free resources allow, and more as nodes join, until the budget is spent.")
@click.option("--gpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--cpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--gpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ranks each worker trains a trial on; it reserves that many times --gpus-per-worker and "
                   "--cpus-per-worker, on one node (a placement group).")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch, per worker (default: Ray's OMP_NUM_THREADS, from --cpus-per-worker).")
@storage_option
@artifacts_option
def ray_workers(name, address, num_workers, fill, gpus_per_worker, cpus_per_worker, gpus_per_trial, threads,
                storage_url, artifacts):
    """Run workers of study NAME as actors on a Ray cluster until its budget is spent; each sees the
    GPUs Ray gives it. The cluster's nodes need tunefleet, and the storage, model and dataset."""
    if (num_workers is None) != fill:
        raise InputError("give one of --num-workers N and --fill")
    if fill and not gpus_per_worker and not cpus_per_worker:
        raise InputError("--fill needs --gpus-per-worker or --cpus-per-worker above 0, to know when it is full")
    from workers.ray_fleet import launch

    forwarded = [name] + [a for flag, value in (("--threads", threads),
                                                ("--artifacts", artifacts and Path(artifacts).absolute()))
                          if value is not None for a in (flag, str(value))]
    sys.exit(launch(name, address, storage_url, forwarded, num_workers, cpus_per_worker, gpus_per_worker,
                    ranks=gpus_per_trial))


@cli.command()
@click.argument("name")
@storage_option
@json_option
def status(name, storage_url, as_json):
    """Trial counts by state, the best so far, running trials and prune reasons."""
    from search.report import status as build

    report = build(*_load(storage_url, name))
    if as_json:
        return _print_json(report)
    click.echo(views.status(report))


@cli.command()
@click.argument("name")
@storage_option
@json_option
def best(name, storage_url, as_json):
    """Best params with the matching TrainingArguments and peft config (JSON)."""
    from search.report import best as build

    _print_json(build(*_load(storage_url, name)))


@cli.command()
@click.argument("name")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (params and cost as columns).")
def trials(name, storage_url, as_json, as_csv):
    """One row per trial: number, state, value, params, cost and why it ended."""
    from search.report import trials as build

    rows = build(*_load(storage_url, name))
    if as_json:
        return _print_json(rows)
    click.echo(views.trials_csv(rows) if as_csv else views.trials(rows))


@cli.command("export")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write (new or empty).")
@click.option("--trial", "number", type=int, help="Trial number (default: the best complete trial).")
@click.option("--merge", is_flag=True, help="LoRA/QLoRA: also write the adapter merged into the base (DIR/merged).")
@click.option("--artifacts", type=click.Path(file_okay=False), help="Artifact directory (default: beside the storage).")
@storage_option
@json_option
def export_cmd(name, out, number, merge, artifacts, storage_url, as_json):
    """Write a trial's kept weights as a finished model: adapter (or model), its training
    arguments and peft config, a `trl sft` config and a README."""
    from search.study import load
    from storage import backend
    from workers.export_trial import export_trial

    storage = _open(storage_url)
    study, spec = load(storage, name)
    record = export_trial(study, spec, backend(storage_url).artifacts(storage, artifacts), Path(out), number, merge)
    if as_json:
        return _print_json(record)
    click.echo(views.exported(record, merge))


@cli.command()
@storage_option
@json_option
def studies(storage_url, as_json):
    """List the studies in the storage."""
    from search.report import studies as build

    rows = build(_open(storage_url))
    if as_json:
        return _print_json(rows)
    click.echo(views.studies(rows))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 for all).")
@click.option("--port", default=8080, show_default=True)
@storage_option
@artifacts_option
def dashboard(host, port, storage_url, artifacts):
    """Serve optuna-dashboard on the same storage, with the trials' curves."""
    from search.dashboard import serve
    from storage import backend

    storage = _open(storage_url)
    where = backend(storage_url)
    serve(storage, where.artifacts(storage, artifacts), host, port, where.shown)


@cli.command()
@click.option("--workers", "n_workers", default=2, show_default=True, help="Local worker processes.")
@click.option("--trials", "n_trials", default=12, show_default=True, help="Configurations to try.")
@click.option("--epochs", default=1.0, show_default=True, help="Passes over the data of a trial that runs in full.")
@click.option("--cache", default=".tunefleet/demo", show_default=True, type=click.Path(),
              help="Where the tiny model and dataset are built (once).")
@storage_option
def demo(n_workers, n_trials, epochs, cache, storage_url):
    """Build a tiny model and dataset offline, then run a real study with local workers."""
    from search.demo import run

    sys.exit(run(n_workers, n_trials, epochs, Path(cache), storage_url))


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = 130
    except click.UsageError as e:
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        code = 2
    except (InputError, StorageError) as e:
        click.echo(f"error: {e}", err=True)
        code = 2
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
