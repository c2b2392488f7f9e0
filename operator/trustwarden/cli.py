"""The `trustwarden` command line: run the operator, and operate it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import uuid

from trustwarden import __version__


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run the operator")
    run.add_argument(
        "--namespace",
        default=os.environ.get("TRUSTWARDEN_NAMESPACE", "trustwarden-system"),
        help="operator namespace: CA Secrets, revocations, leader lease (default: trustwarden-system)",
    )
    run.add_argument(
        "--local",
        action="store_true",
        help="developer mode: serve the webhook on 127.0.0.1 with a self-made certificate and "
        "register it by URL; create the operator namespace if missing",
    )
    run.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig file")
    run.add_argument("--context", help="kubeconfig context")
    run.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="namespace-scoped mode: watch only these namespaces (repeatable)",
    )
    run.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 disables)"
    )
    run.add_argument("--metrics-address", default=None, help="metrics bind address")
    run.add_argument(
        "--health-port", type=int, default=8081, help="liveness /healthz port (0 disables)"
    )
    run.add_argument("--webhook-port", type=int, default=9443, help="admission webhook port")
    run.add_argument(
        "--webhook-service",
        default=os.environ.get("TRUSTWARDEN_WEBHOOK_SERVICE"),
        help="in-cluster: the Service in front of the webhook; the operator keeps the "
        "MutatingWebhookConfiguration's caBundle in sync",
    )
    run.add_argument(
        "--webhook-configuration",
        default="trustwarden-webhook",
        help="name of the MutatingWebhookConfiguration (default: trustwarden-webhook)",
    )
    run.add_argument("--concurrency", type=int, default=8, help="parallel issuances (default 8)")
    run.add_argument(
        "--no-leader-elect",
        action="store_true",
        help="do not take the leader Lease (single replica only)",
    )
    run.add_argument("--lease-duration", type=float, default=15.0, help="leader lease seconds")
    run.add_argument(
        "--identity", default=None, help="leader-election identity (default: host-pid-random)"
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trustwarden", description=__doc__)
    parser.add_argument("--version", action="version", version=f"trustwarden {__version__}")
    parser.add_argument("--debug", action="store_true", help="show stack traces on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(subparsers)
    return parser


def _run(args: argparse.Namespace) -> int:
    from trustwarden.handlers.runner import run
    from trustwarden.handlers.services import OperatorConfig

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kopf").setLevel(logging.WARNING)
    identity = args.identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    config = OperatorConfig(
        operator_namespace=args.namespace,
        local=args.local,
        kubeconfig=args.kubeconfig,
        context=args.context,
        watch_namespaces=list(args.watch_namespace),
        metrics_address=args.metrics_address or ("127.0.0.1" if args.local else "0.0.0.0"),  # noqa: S104
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        webhook_address="127.0.0.1" if args.local else "0.0.0.0",  # noqa: S104
        webhook_port=args.webhook_port,
        webhook_service=args.webhook_service,
        webhook_configuration=args.webhook_configuration,
        concurrency=args.concurrency,
        leader_elect=not args.no_leader_elect,
        lease_duration=args.lease_duration,
        identity=identity,
    )
    asyncio.run(run(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"trustwarden {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
