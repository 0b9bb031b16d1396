"""``dicom-node``: serve, db upgrade, jobs, segment. Each command is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import asdict

from pydantic import ValidationError

from dicom_node.config import Settings, load_settings
from dicom_node.db.models import JobState
from dicom_node.db.session import Database


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
        sys.exit("dicom-node: invalid configuration (DICOM_NODE_* variables):\n" + "\n".join(lines))


def cmd_serve(args: argparse.Namespace) -> int:
    from dicom_node.db.migrate import upgrade
    from dicom_node.receive.tls import server_context
    from dicom_node.runtime.modes import Processing, StartupError, start_processing
    from dicom_node.runtime.node import Node

    settings = _settings_or_exit()
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    processing: Processing | None = None
    if not args.no_processing:
        from dicom_node.models.shipped import check_model

        try:
            model = check_model(db, settings)
        except Exception as exc:
            sys.exit(f"dicom-node: cannot start processing: {exc}")
        print(f"model {model}", flush=True)
        try:
            processing = start_processing(settings)
        except StartupError as exc:
            sys.exit(f"dicom-node: {exc}")
    try:
        tls = server_context(settings)
    except (OSError, ValueError) as exc:
        sys.exit(f"dicom-node: cannot load the TLS certificate or key: {exc}")
    node = Node(settings, db, processor=processing.processor if processing else None, dispatch=processing is not None, ssl_context=tls)

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("dicom_node").info("signal %d: shutting down", signum)
        node.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    print(f"dicom-node listening as {settings.ae_title} on port {settings.port}; data in {settings.data_dir}", flush=True)
    server = processing.prefect_server if processing else None
    if server is not None:
        print(f"Prefect dashboard: {server.dashboard_url}", flush=True)
    try:
        node.run()
    finally:
        node.stop()
        if server is not None:
            server.stop()
        db.dispose()
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from dicom_node.db.migrate import current_revision, upgrade

    settings = _settings_or_exit()
    url = settings.resolved_database_url
    upgrade(url, args.revision)
    print(f"database at revision {current_revision(url)}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from dicom_node.jobs.listing import list_jobs

    settings = _settings_or_exit()
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        rows = list_jobs(session, limit=args.limit, state=args.state)
    if args.json:
        hidden = () if args.uids else ("series_instance_uid", "study_instance_uid")  # they can carry dates and site identifiers
        print(json.dumps([{k: v for k, v in asdict(r).items() if k not in hidden} for r in rows], indent=2))
        return 0
    header = f"{'id':>5}  {'state':<9}  {'kind':<14}  {'ver':>3}  {'inst':>5}  {'model':<10}  series"
    print(header)
    for r in rows:
        print(f"{r.id:>5}  {r.state:<9}  {r.kind:<14}  {r.version:>3}  {r.instances:>5}  {(r.model_version or '-'):<10}  {(r.series_instance_uid if args.uids else r.series) or '(retrain: all expert masks)'}")
        if r.state in ("skipped", "no-brain", "failed") and r.reason:
            print(f"{'':>7}{r.state}: {r.reason}")
    return 0


def cmd_flows_deploy(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    from dicom_node.flows.deploy import deploy

    print(f"deployments process-series/dicom-node and retrain/dicom-node on work pool {settings.work_pool}: {deploy(settings.work_pool)}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A GPU/CPU worker for distributed mode: deploy (idempotent), then run a Prefect process worker."""
    import os
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    settings = _settings_or_exit()
    if not PREFECT_API_URL.value():
        sys.exit("dicom-node worker: set PREFECT_API_URL to the Prefect server's API")
    from dicom_node.flows.deploy import deploy

    deploy(settings.work_pool)
    prefect = str(Path(sys.executable).parent / "prefect")
    os.execv(prefect, [prefect, "worker", "start", "--pool", settings.work_pool, "--type", "process"])
    return 0  # not reached


def _database(settings: Settings) -> Database:
    from dicom_node.db.migrate import upgrade

    upgrade(settings.resolved_database_url)
    return Database(settings.resolved_database_url)


def cmd_models_list(args: argparse.Namespace) -> int:
    from dicom_node.models.registry import list_models

    with _database(_settings_or_exit()).session() as session:
        rows = list_models(session)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{'version':<24}  {'status':<10}  {'parent':<24}  {'masks':>5}  {'dice':>7}  created")
    for r in rows:
        dice = (r.metrics or {}).get("dice")
        shown = f"{dice:.4f}" if isinstance(dice, (int, float)) else "-"
        print(f"{r.version:<24}  {r.status:<10}  {(r.parent or '-'):<24}  {r.n_masks:>5}  {shown:>7}  {r.created_at[:19]}")
    return 0


def cmd_models_change(args: argparse.Namespace) -> int:
    from dicom_node.models.registry import RegistryError, promote, rollback

    try:
        with _database(_settings_or_exit()).session() as session:
            row = promote(session, args.version) if args.models_command == "promote" else rollback(session)
            print(f"{row.version} is in production; new jobs use it")
    except RegistryError as exc:
        sys.exit(f"dicom-node models {args.models_command}: {exc}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Queue a retraining round now (the node's dispatcher runs it)."""
    from dicom_node.jobs.tracker import queue_retrain_if_due

    with _database(_settings_or_exit()).session() as session:
        job = queue_retrain_if_due(session, min_new_masks=1, force=True)
        if job is None:
            sys.exit("dicom-node retrain: no expert masks yet, or a round is already queued or running")
        print(f"retraining round {job.version} queued as job {job.id}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from dicom_node.cli import segment

    return segment.run(args, _settings_or_exit())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the DICOM listener, series tracker, processing and export")
    serve.add_argument("--no-processing", action="store_true", help="store, track and export only; jobs stay queued for a node that processes")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    jobs.add_argument("--limit", type=int, default=100)
    jobs.add_argument("--state", choices=[s.value for s in JobState])
    jobs.add_argument("--uids", action="store_true", help="show the full Series and Study UIDs, not their short hashes (they can carry dates and site identifiers)")
    jobs.set_defaults(func=cmd_jobs)

    flows = sub.add_parser("flows", help="Prefect deployments (distributed mode)")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True)
    flows_sub.add_parser("deploy", help="register process-series on the work pool").set_defaults(func=cmd_flows_deploy)
    sub.add_parser("worker", help="run a Prefect worker for the node's work pool").set_defaults(func=cmd_worker)

    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="versions, status and metrics")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    promote = models_sub.add_parser("promote", help="put VERSION in production")
    promote.add_argument("version")
    promote.set_defaults(func=cmd_models_change)
    models_sub.add_parser("rollback", help="restore the previous production version").set_defaults(func=cmd_models_change)
    sub.add_parser("retrain", help="queue a retraining round on all expert masks now").set_defaults(func=cmd_retrain)

    from dicom_node.cli import segment as segment_command
    from dicom_node.cli import train as train_command

    train = sub.add_parser("train", help="train a model on DICOM series with SEG masks and/or NIfTI pairs")
    train_command.add_train_arguments(train)
    train.set_defaults(func=train_command.run_train)
    evaluate = sub.add_parser("evaluate", help="Table-2 metrics of a model on labelled data")
    train_command.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=train_command.run_evaluate)

    seg = sub.add_parser("segment", help="segment every MR series in a folder, offline")
    segment_command.add_arguments(seg)
    seg.set_defaults(func=cmd_segment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # scanners' VR-length quirks are not ours to report
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
