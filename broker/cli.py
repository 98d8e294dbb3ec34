"""The ``broker`` command line.

Every failure is one clear line on stderr and a non-zero exit; never a
traceback (set ``BROKER_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from broker import __version__
from broker.errors import BadRequest, BrokerError, InvalidDocument
from broker.logs import configure_logging
from broker.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


#: ``broker holders`` sub-commands: the change's kind, the option naming its party, help.
HOLDER_COMMANDS = {
    "sale": ("sale", "--to", "the vehicle was sold to a customer (its new owner)"),
    "driver-start": ("driver_started", "--customer", "a customer starts driving the vehicle"),
    "driver-end": ("driver_ended", "--customer", "a customer's driver period ends"),
    "fleet-join": ("fleet_joined", "--operator", "the vehicle joins a fleet operator's fleet"),
    "fleet-leave": ("fleet_left", "--operator", "the vehicle leaves a fleet operator's fleet"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"broker: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="broker", description="Vehicle-data-sharing broker.")
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the broker's HTTP server")
    serve.add_argument("--host", help="address to listen on (default BROKER_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default BROKER_PORT or 8080)")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_commands.add_parser("upgrade", help="migrate the database to this version's schema")
    db_commands.add_parser("status", help="show the database's schema revision")

    contracts = commands.add_parser("contracts", help="data-sharing contracts")
    contract_commands = contracts.add_subparsers(
        dest="contracts_command", required=True, parser_class=_Parser
    )
    validate = contract_commands.add_parser("validate", help="validate contract files")
    validate.add_argument("files", nargs="+", type=Path)
    load = contract_commands.add_parser(
        "load", help="load contract files (a new version is an amendment)"
    )
    load.add_argument("files", nargs="+", type=Path)

    seed = commands.add_parser("seed", help="load a seed file (idempotent)")
    seed.add_argument("file", type=Path)

    grants = commands.add_parser("grants", help="data grants")
    grant_commands = grants.add_subparsers(
        dest="grants_command", required=True, parser_class=_Parser
    )
    listing = grant_commands.add_parser("list", help="list grants")
    listing.add_argument("--vin")
    listing.add_argument("--customer")
    grant_commands.add_parser("expire", help="expire every grant whose validity has ended")

    commands.add_parser("purge", help="erase everything whose retention has passed")

    holders = commands.add_parser(
        "holders", help="who holds a vehicle: sales, driver periods, fleets (idempotent)"
    )
    holder_commands = holders.add_subparsers(
        dest="holders_command", required=True, parser_class=_Parser
    )
    for name, (_kind, option, what) in HOLDER_COMMANDS.items():
        change = holder_commands.add_parser(name, help=what)
        change.add_argument("--vin", required=True)
        change.add_argument(option, required=True, dest="party", metavar=option[2:].upper())
        change.add_argument("--at", help="when it took effect (RFC 3339; default: now)")
        change.add_argument(
            "--change-id", help="the change's idempotency key (default: a random one)"
        )

    oauth = commands.add_parser("oauth", help="the authorization server")
    oauth_commands = oauth.add_subparsers(dest="oauth_command", required=True, parser_class=_Parser)
    oauth_commands.add_parser(
        "rotate-key", help="make a new token signing key current (old keys stay in the JWKS)"
    )

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    audit_commands.add_parser("verify", help="verify every entry and signed checkpoint")
    audit_commands.add_parser("checkpoint", help="write a signed checkpoint of the log")

    bench = commands.add_parser("bench", help="benchmarks (figures as ratios to a baseline)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    bench_gate = bench_commands.add_parser(
        "gate", help="releases/s through the gate vs plain inserts"
    )
    bench_gate.add_argument("--releases", type=int, default=2000)
    bench_gate.add_argument("--concurrency", type=int, default=64)
    bench_gate.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run on PostgreSQL (a scratch database is created there and dropped)",
    )

    bench_ingest = bench_commands.add_parser(
        "ingest", help="records/s through ingest vs plain inserts of the same rows"
    )
    bench_ingest.add_argument("--records", type=int, default=20_000)
    bench_ingest.add_argument("--batch", type=int, default=500)
    bench_ingest.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run on PostgreSQL (a scratch database is created there and dropped)",
    )

    bench_webhooks = bench_commands.add_parser(
        "webhooks", help="messages/s through a delivery worker vs plain signed POSTs"
    )
    bench_webhooks.add_argument("--messages", type=int, default=2000)
    bench_webhooks.add_argument("--vehicles", type=int, default=200)
    bench_webhooks.add_argument(
        "--concurrency",
        type=int,
        help="deliveries in flight (default BROKER_WEBHOOK_CONCURRENCY or 16)",
    )
    bench_webhooks.add_argument(
        "--pings",
        action="store_true",
        help="queue pings instead of data messages: the delivery machinery without the gate",
    )
    bench_webhooks.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run on PostgreSQL (a scratch database is created there and dropped)",
    )

    webhooks = commands.add_parser("webhooks", help="webhook deliveries (fleet operators)")
    webhook_commands = webhooks.add_subparsers(
        dest="webhooks_command", required=True, parser_class=_Parser
    )
    webhook_commands.add_parser(
        "worker", help="deliver queued webhook messages until stopped (run as many as you like)"
    )
    replay = webhook_commands.add_parser("replay", help="queue dead letters again")
    replay.add_argument("--subscription", help="only this subscription's dead letters")
    replay.add_argument("--message", action="append", default=[], help="only this webhook-id")
    dead = webhook_commands.add_parser("dead-letters", help="list dead letters")
    dead.add_argument("--subscription")

    demo = commands.add_parser("demo", help="load the demo seed, make telemetry, and serve")
    demo.add_argument("--no-serve", action="store_true", help="prepare and exit")
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if _long_running(args):
            configure_logging(settings.log_level, settings.log_format)
        else:
            configure_logging("WARNING", "text", sys.stderr)
        return _dispatch(args, settings)
    except InvalidDocument as exc:
        print(f"broker: {exc.detail}", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error['path']}: {error['message']}", file=sys.stderr)
        return EXIT_FAILED
    except BrokerError as exc:
        print(f"broker: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("BROKER_DEBUG"):
            raise
        print(
            f"broker: internal error ({type(exc).__name__}); set BROKER_DEBUG=1 for details",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _long_running(args: argparse.Namespace) -> bool:
    """Commands that run until stopped log like a service (``BROKER_LOG_LEVEL``,
    ``BROKER_LOG_FORMAT``: JSON by default); one-shot commands log warnings as text."""
    return (
        args.command == "serve"
        or (args.command == "demo" and not args.no_serve)
        or (args.command == "webhooks" and args.webhooks_command == "worker")
    )


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    if args.command == "serve":
        from broker.serve import serve

        serve(replace(settings, host=args.host or settings.host, port=args.port or settings.port))
        return EXIT_OK
    if args.command == "demo":
        from broker.demo import run_demo

        demo_settings = replace(
            settings, host=args.host or settings.host, port=args.port or settings.port
        )
        return run_demo(demo_settings, serve_after=not args.no_serve)
    if args.command == "contracts" and args.contracts_command == "validate":
        return _validate_contracts(settings, args.files)
    if args.command == "oauth" and args.oauth_command == "rotate-key":
        from broker.oauth.keys import rotate

        kid = rotate(settings.oauth_keys_dir)
        print(f"new signing key {kid} is current from the next start; older keys stay published")
        return EXIT_OK
    if args.command == "bench":
        return _bench(args, settings)
    return _with_broker(args, settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from broker import bench, bench_webhooks
    from broker.demo import demo_seed_path

    result: bench.BenchResult | bench.IngestBenchResult | bench_webhooks.WebhookBenchResult
    if args.bench_command == "webhooks":
        concurrency = args.concurrency or settings.webhook_concurrency
        if args.messages < 1 or args.vehicles < 1 or concurrency < 1:
            raise BadRequest("--messages, --vehicles and --concurrency must be at least 1")
        result = bench_webhooks.bench_webhooks(
            messages=args.messages,
            vehicles=args.vehicles,
            concurrency=concurrency,
            postgres_admin_url=args.postgres,
            seed_path=demo_seed_path(),
            pings=args.pings,
        )
    elif args.bench_command == "ingest":
        if args.records < 1 or args.batch < 1:
            raise BadRequest("--records and --batch must be at least 1")
        result = bench.bench_ingest(
            records=args.records,
            batch=args.batch,
            postgres_admin_url=args.postgres,
            seed_path=demo_seed_path(),
        )
    else:
        if args.releases < 1 or args.concurrency < 1:
            raise BadRequest("--releases and --concurrency must be at least 1")
        result = bench.bench_gate(
            releases=args.releases,
            concurrency=args.concurrency,
            postgres_admin_url=args.postgres,
            seed_path=demo_seed_path(),
        )
    print("\n".join(result.lines()))
    return EXIT_OK


def _validate_contracts(settings: Settings, files: list[Path]) -> int:
    from broker.documents import DocumentLibrary

    library = DocumentLibrary(settings.contracts_dir)
    failed = 0
    for path in files:
        errors = library.validate_contract_file(path)
        if errors:
            failed += 1
            for error in errors:
                print(f"{path}: {error.path}: {error.message}", file=sys.stderr)
        else:
            print(f"{path}: valid")
    if failed:
        print(f"broker: {failed} of {len(files)} contract file(s) invalid", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _with_broker(args: argparse.Namespace, settings: Settings) -> int:
    from broker import commands
    from broker.bootstrap import open_broker

    if args.command == "db":
        return commands.db(settings, args.db_command)
    broker = open_broker(settings)
    try:
        if args.command == "seed":
            report = commands.seed(broker, args.file)
            print(json.dumps(report, indent=2))
            return EXIT_OK
        if args.command == "contracts" and args.contracts_command == "load":
            for line in commands.load_contracts(broker, args.files):
                print(line)
            return EXIT_OK
        if args.command == "grants" and args.grants_command == "list":
            for line in commands.list_grants(broker, vin=args.vin, customer=args.customer):
                print(line)
            return EXIT_OK
        if args.command == "purge":
            print(json.dumps(commands.purge(broker), indent=2))
            return EXIT_OK
        if args.command == "audit":
            ok, lines = commands.audit(broker, args.audit_command)
            for line in lines:
                print(line, file=sys.stdout if ok else sys.stderr)
            return EXIT_OK if ok else EXIT_FAILED
        if args.command == "webhooks":
            return commands.webhooks(broker, args)
        if args.command == "holders":
            kind, option, _ = HOLDER_COMMANDS[args.holders_command]
            fleet = option == "--operator"
            result = commands.holder_change(
                broker,
                kind=kind,
                vin=args.vin,
                customer=None if fleet else args.party,
                operator=args.party if fleet else None,
                at=args.at,
                change_id=args.change_id,
            )
            print(json.dumps(result, indent=2))
            return EXIT_OK
        if args.command == "grants" and args.grants_command == "expire":
            print(f"expired {commands.expire_grants(broker)} grant(s)")
            return EXIT_OK
    finally:
        broker.close()
    raise BrokerError(f"unknown command {args.command!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
