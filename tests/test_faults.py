"""Runs left RUNNING by a dead process are marked killed, and only those: a run whose
process is alive (it holds its lock) is never touched; a run killed before it logged anything
is taken over by its config's next run; a tracking server that does not answer is waited for,
then named as what it is (docs/faults.md)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.servers import free_port
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from harness import names
from harness.callbacks import interrupt as launcher_interrupt
from harness.lifecycle.identity import job_of
from harness.lifecycle.runs import RUNNING_ELSEWHERE
from harness.lifecycle.signals import StopRequest
from harness.tracking import liveness
from harness.tracking.liveness import close_dead_jobs, close_dead_sweeps, run_lock_path
from harness.tracking.run import MlflowTracker, RunStopped
from harness.tracking.store import (
    StoreError,
    TrackingUnreachable,
    ensure_store,
    experiment_id,
)
from harness.tracking.sweep import SWEEP_LOCK_FILE, start_sweep
from harness.train import train, train_batched


def only_run(client: MlflowClient, experiment: str):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def test_rerunning_a_config_closes_its_dead_running_run(
        make_cfg: Callable[..., DictConfig], store_uri: str) -> None:
    """A run of this config left RUNNING (its process died before any checkpoint) is marked
    killed when the config runs again; the new run is the result."""
    cfg = make_cfg("task.gap=4", "experiment_name=orphan")
    train(cfg)
    client = MlflowClient(store_uri)
    dead = only_run(client, "orphan")
    client.update_run(dead.info.run_id, status="RUNNING")  # as a SIGKILLed job leaves it
    client.delete_tag(dead.info.run_id, names.STATUS)
    train(cfg)
    runs = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("orphan").experiment_id])}
    assert len(runs) == 2
    assert runs[dead.info.run_id].info.status == "KILLED"
    assert runs[dead.info.run_id].data.tags[names.STATUS] == names.KILLED
    (new,) = [r for r in runs.values() if r.info.run_id != dead.info.run_id]
    assert new.info.status == "FINISHED" and new.data.tags[names.STATUS] in names.STATUSES


@pytest.mark.parametrize("status", ["RUNNING", "KILLED"])
def test_a_run_killed_before_it_logged_anything_is_taken_over(
        make_cfg: Callable[..., DictConfig], store_uri: str, tmp_path: Path, status: str) -> None:
    """A job killed between creating its run and its first write leaves a run with no metric:
    RUNNING (its process died), or KILLED (a later sweep closed it). The config's next run
    takes it over as if it had never started, so the config has one run in the store."""
    cfg = make_cfg("task.gap=4", "experiment_name=stub")
    job = job_of(cfg)
    client = MlflowClient(store_uri)
    ensure_store(store_uri)
    experiment = experiment_id(store_uri, "stub")  # its artifacts beside the store
    stub = client.create_run(experiment, run_name=job.name,
                             tags={names.CONFIG_HASH: job.hash_}).info.run_id
    client.log_param(stub, names.CHECKPOINT_DIR, str(tmp_path / "checkpoints"))  # killed here
    if status == "KILLED":
        client.set_terminated(stub, "KILLED")
    result = train(cfg)
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == stub and run.info.status == "FINISHED"
    assert run.data.tags[names.STATUS] == result.status
    assert run.data.params[names.GAP] == "4" and run.data.tags[names.GIT_COMMIT]
    assert run.data.metrics[names.STEPS_RUN] == result.steps_run
    assert [m.step for m in client.get_metric_history(stub, names.EVAL_LOSS)] == [0, 10, 20]
    assert names.CONFIG_ARTIFACT in {a.path for a in client.list_artifacts(stub)}


def outage_at_closing(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The tracking server stops answering as runs close: the closing flush writes its first
    chunk, then fails (`flush`), or every closing write lands and the answer to the last
    one, the FINISHED status, is lost (`terminate`)."""
    flush, terminate = MlflowTracker.flush, MlflowTracker.terminate

    def failing_flush(self: MlflowTracker, tags: dict[str, str] | None = None) -> None:
        if where == "flush" and tags and names.STATUS in tags:
            chunk = [Metric(*point) for point in self._buffer[:7]]
            self.client.log_batch(self.run_id, metrics=chunk)
            del self._buffer[:7]
            raise TrackingUnreachable("tracking server gone (injected at the closing flush)")
        flush(self, tags)

    def failing_terminate(self: MlflowTracker, status: str) -> None:
        terminate(self, status)
        if where == "terminate":
            self.terminated = False
            raise TrackingUnreachable("tracking server gone (injected: the answer is lost)")

    monkeypatch.setattr(MlflowTracker, "flush", failing_flush)
    monkeypatch.setattr(MlflowTracker, "terminate", failing_terminate)


@pytest.mark.parametrize("batched", [False, True], ids=["one_run", "batched"])
@pytest.mark.parametrize("where", ["flush", "terminate"])
def test_an_outage_while_runs_close_is_finished_by_the_rerun_with_no_point_twice(
        make_cfg: Callable[..., DictConfig], store_uri: str, monkeypatch: pytest.MonkeyPatch,
        where: str, batched: bool) -> None:
    """Found by .ci/run on 2026-12-07: a job whose closing writes met an outage left its
    checkpoint of 10 steps before the end, and the rerun trained those steps again, logging
    them a second time. Now the closing is saved, and the rerun only finishes it: one run per
    config, FINISHED with its status, every train_loss step once, and the same result."""
    cfg = make_cfg("task.gap=4", "experiment_name=closing", "train.checkpoint_every=10",
                   *(["batched_seeds=[0,1]"] if batched else []))
    run = train_batched if batched else train
    with monkeypatch.context() as patch:
        outage_at_closing(patch, where)
        with pytest.raises(TrackingUnreachable):
            run(cfg)
    closings = sorted(Path(cfg.train.checkpoint_dir).rglob("*.closing.pt"))
    assert len(closings) == (2 if batched else 1)
    again = run(cfg)
    assert not list(Path(cfg.train.checkpoint_dir).rglob("*.closing.pt"))
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("closing").experiment_id])
    assert len(runs) == (2 if batched else 1)
    results = again if batched else [again]
    for stored in runs:
        assert stored.info.status == "FINISHED"
        assert stored.data.tags[names.STATUS] in names.STATUSES
        steps = [m.step for m in client.get_metric_history(stored.info.run_id,
                                                           names.TRAIN_LOSS)]
        assert steps == [5, 10, 15, 20]
        for key in (names.STEPS_RUN, names.FINAL_EVAL_LOSS, names.WALL_TIME_S):
            assert len(client.get_metric_history(stored.info.run_id, key)) == 1, key
    assert sorted(r.data.metrics[names.FINAL_EVAL_LOSS] for r in runs) == \
        sorted(r.final_eval_loss for r in results)


class Health(BaseHTTPRequestHandler):
    """A tracking server's health endpoint and nothing else."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering(port: int, after_s: float) -> Iterator[None]:
    """An HTTP server on 127.0.0.1:`port` that starts answering /health `after_s` from now
    (stopped when the block ends, once it has started)."""
    servers: list[ThreadingHTTPServer] = []
    started = threading.Event()

    def serve() -> None:
        time.sleep(after_s)
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), Health))
        started.set()
        servers[0].serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        started.wait(timeout=30)
        servers[0].shutdown()
        servers[0].server_close()
        thread.join()


def test_an_unreachable_tracking_server_is_waited_for_then_named_as_an_outage() -> None:
    """Without a wait (a single run's check before it starts) an unreachable server is refused
    at once; with one (a job of a sweep whose server answered when the sweep began), it is
    waited for: a server back within the wait is used, one that is not ends the wait as
    TrackingUnreachable, never as an invalid config (StoreError)."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreError, match=rf"^tracking.uri: MLflow server {url} unreachable"):
        ensure_store(url)
    start = time.monotonic()
    with pytest.raises(TrackingUnreachable,
                       match=rf"^tracking server {url} unreachable for 1 s \(tracking.wait_s"):
        ensure_store(url, wait_s=1.0)
    assert 1.0 <= time.monotonic() - start < 10
    start = time.monotonic()
    with answering(int(url.rsplit(":", 1)[1]), after_s=1.5):
        ensure_store(url, wait_s=30.0)
    assert 1.5 <= time.monotonic() - start < 10


def test_a_config_another_live_process_runs_is_skipped(
        make_cfg: Callable[..., DictConfig], store_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg("task.gap=4", "experiment_name=busy")
    first = train(cfg)  # learn the config's hash from its run
    client = MlflowClient(store_uri)
    run = only_run(client, "busy")
    lock = run_lock_path(tmp_path / "checkpoints", "busy", run.data.tags[names.CONFIG_HASH])
    assert lock.exists()
    with liveness.hold(lock):  # a second open file of it: what another process would hold
        skipped = train(make_cfg("task.gap=4", "experiment_name=busy", "force=true"))
    assert skipped.status == RUNNING_ELSEWHERE and first.status != RUNNING_ELSEWHERE
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no run created


def test_an_interrupted_sweep_closes_dead_jobs_but_not_live_ones(store_uri: str,
                                                                 tmp_path: Path) -> None:
    client = MlflowClient(store_uri)
    sweep_dir = tmp_path / "sweep"
    sweep_id = start_sweep(store_uri, "int", sweep_dir, [], {})
    experiment = client.get_experiment_by_name("int").experiment_id
    jobs = {}
    for hash_ in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        run = client.create_run(experiment, tags={names.SWEEP_ID: sweep_id,
                                                  names.CONFIG_HASH: hash_})
        client.log_param(run.info.run_id, names.CHECKPOINT_DIR, str(tmp_path / "ckpt"))
        client.log_param(run.info.run_id, names.EXPERIMENT_NAME, "int")
        jobs[hash_] = run.info.run_id
    live_lock = run_lock_path(tmp_path / "ckpt", "int", "aaaaaaaaaaaa")
    dead_lock = run_lock_path(tmp_path / "ckpt", "int", "bbbbbbbbbbbb")
    with liveness.hold(dead_lock):  # its process held it, then died
        pass
    with liveness.hold(live_lock):
        closed, alive = close_dead_jobs(store_uri, sweep_id, wait_s=0.5)
    assert closed == [jobs["bbbbbbbbbbbb"]] and alive == [jobs["aaaaaaaaaaaa"]]
    assert client.get_run(jobs["aaaaaaaaaaaa"]).info.status == "RUNNING"
    killed = client.get_run(jobs["bbbbbbbbbbbb"])
    assert killed.info.status == "KILLED" and killed.data.tags[names.STATUS] == names.KILLED


def test_the_next_sweep_closes_a_sweep_whose_launcher_died(store_uri: str,
                                                           tmp_path: Path) -> None:
    client = MlflowClient(store_uri)
    live_dir, dead_dir = tmp_path / "live", tmp_path / "dead"
    with liveness.hold(dead_dir / SWEEP_LOCK_FILE):
        dead = start_sweep(store_uri, "next", dead_dir, [], {})
    with liveness.hold(live_dir / SWEEP_LOCK_FILE):
        live = start_sweep(store_uri, "next", live_dir, [], {})
        assert close_dead_sweeps(store_uri, "next") == [dead]
        assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags[names.SWEEP_DIR] == str(dead_dir.resolve())


def test_a_stop_signal_waits_for_the_step_when_checkpointing() -> None:
    """SIGTERM while deferred only records the request (the loop checkpoints, then stops);
    outside the loop it stops at once."""
    stop = StopRequest()
    with pytest.raises(RunStopped, match="SIGTERM"), stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is not stop.handle  # restored
    stop = StopRequest()
    with pytest.raises(RunStopped, match="as the checkpoint's save raises it"), \
            stop.installed():
        stop.deferred = True
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.signal == "SIGTERM"
        raise RunStopped("as the checkpoint's save raises it")


def test_a_stop_signal_is_passed_on_to_the_launching_process_handler() -> None:
    """In an in-process sweep (joblib n_jobs=1) the launcher's own SIGTERM handler runs
    after the job closed its run, so the sweep stops too."""
    before = signal.signal(signal.SIGTERM, launcher_interrupt)  # as the callback sets it
    try:
        stop = StopRequest()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM to the launching process"), \
                stop.installed():
            stop.deferred = True
            os.kill(os.getpid(), signal.SIGTERM)  # the job's handler gets it first
            assert stop.requested()
            raise RunStopped("as the checkpoint's save raises it")
        # any other handler that was there before is not called again
        seen = []
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        stop = StopRequest()
        with pytest.raises(RunStopped, match="as the checkpoint's save raises it"), \
                stop.installed():
            stop.deferred = True
            os.kill(os.getpid(), signal.SIGTERM)
            raise RunStopped("as the checkpoint's save raises it")
        assert seen == []
    finally:
        signal.signal(signal.SIGTERM, before)
