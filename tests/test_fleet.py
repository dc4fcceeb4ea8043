"""Workers on many GPUs and a study deleted under running workers."""

from __future__ import annotations

import optuna
from conftest import start_tunefleet, tunefleet
from test_bad_input import assert_one_line_error

from search import attrs
from storage import open_storage


def _create(tiny, tmp_path, name, url, n_trials, max_steps):
    model, dataset = tiny
    created = tunefleet("study", "create", name, "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", n_trials, "--pruner", "none", "--max-steps", max_steps, "--eval-steps", 10, "--seq-len", 48,
                        "--storage", url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr


def test_one_worker_process_per_gpu_records_its_device(tiny, tmp_path):
    url = f"journal:{tmp_path / 'j.log'}"
    _create(tiny, tmp_path, "gpus", url, n_trials=4, max_steps=20)
    worked = tunefleet("worker", "gpus", "--gpus", "0,1", "--threads", 1, "--storage", url, cwd=tmp_path)
    assert worked.returncode == 0, worked.stderr
    assert worked.stderr.count("study budget spent; exiting") == 2, "two worker processes"
    trials = optuna.load_study(study_name="gpus", storage=open_storage(url)).get_trials()
    assert len(trials) == 4
    for t in trials:
        worker = t.user_attrs[attrs.WORKER]
        assert worker["cuda_visible_devices"] in ("0", "1") and worker["device"] == "cpu" and worker["host"]


def test_bad_gpu_list_is_one_line(tmp_path):
    result = tunefleet("worker", "any", "--gpus", "0,x", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "--gpus takes distinct GPU indices")


def test_a_study_deleted_under_a_running_worker(tiny, tmp_path, pg_url):
    _create(tiny, tmp_path, "doomed", pg_url, n_trials=50, max_steps=200)  # still running at the delete
    storage = open_storage(pg_url)
    worker = start_tunefleet("worker", "doomed", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    study = optuna.load_study(study_name="doomed", storage=storage)
    import time

    deadline = time.time() + 120
    while not any(t.state.is_finished() for t in study.get_trials()):
        assert time.time() < deadline and worker.poll() is None
        time.sleep(0.2)
    assert worker.poll() is None, "the worker is still running when its study goes"
    # Optuna's RDBStorage.delete_study swallows the IntegrityError of a delete that races a
    # worker's new trial (the trial's row refers to the study) and the study stays: `study
    # delete` deletes until it is gone.
    started = time.time()
    gone = tunefleet("study", "delete", "doomed", "--storage", pg_url, cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert "doomed" not in optuna.get_all_study_names(storage)
    assert time.time() - started < 30, "a running worker does not block the delete"
    log = _output_within(worker, 120)
    assert worker.returncode == 2, log
    assert "study 'doomed' was deleted; exiting" in log and "Traceback" not in log, log


def _output_within(process, seconds: float) -> str:
    """Its output once it exits; killed after `seconds`, with what it said, so a hang shows why."""
    import subprocess

    try:
        return process.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running after {seconds} s:\n{process.communicate()[0]}") from None


def test_a_training_worker_holds_at_most_three_connections(tiny, tmp_path, pg_url):
    """The connection budget starts here: a worker's pool, not SQLAlchemy's default of 15."""
    import time

    import psycopg2

    _create(tiny, tmp_path, "pool", pg_url, n_trials=3, max_steps=30)
    database = pg_url.rsplit("/", 1)[1]
    worker = start_tunefleet("worker", "pool", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    peak = 0
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        while worker.poll() is None:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
            peak = max(peak, cur.fetchone()[0])
            time.sleep(0.05)
    admin.close()
    assert worker.returncode == 0, worker.stdout.read()
    assert 1 <= peak <= 3, peak
