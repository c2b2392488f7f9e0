"""The `trustwarden` command line (also a kubectl plugin, `kubectl trustwarden`): run the
operator, and operate it: inventory, verify, revoke, ca status, ca rotate."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import shutil
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from trustwarden import __version__
from trustwarden.ops.errors import UsageError

if TYPE_CHECKING:
    from trustwarden.ops.port import OpsPort


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
    run.add_argument(
        "--bind-address",
        default=os.environ.get("TRUSTWARDEN_BIND_ADDRESS"),
        metavar="IP",
        help="address the webhook, health and metrics ports listen on (default 0.0.0.0; "
        "127.0.0.1 with --local). A hostNetwork pod binds its pod IP, so replicas that "
        "share a host never collide and nothing listens on the host's other interfaces",
    )
    run.add_argument(
        "--metrics-address", default=None, help="metrics bind address (default: --bind-address)"
    )
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
    run.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="API writes in flight at start; the operator raises this while the API server keeps "
        "up and halves it on 429 or 5xx (default 8)",
    )
    run.add_argument(
        "--max-concurrency",
        type=int,
        default=32,
        help="upper bound of the adaptive write concurrency (default 32)",
    )
    run.add_argument(
        "--reissue-rate",
        type=float,
        default=50.0,
        help="emergency CA rotation: leaves re-issued per second at most (default 50); a "
        "scheduled activation re-issues nothing early",
    )
    run.add_argument(
        "--cluster-domain",
        default="cluster.local",
        help="the cluster's DNS domain: a namespace may put names under "
        "<namespace>.svc.<domain> and <namespace>.pod.<domain> in its certificates "
        "(default cluster.local)",
    )
    run.add_argument(
        "--no-leader-elect",
        action="store_true",
        help="do not take the leader Lease (single replica only)",
    )
    run.add_argument("--lease-duration", type=float, default=15.0, help="leader lease seconds")
    run.add_argument(
        "--identity",
        default=None,
        help="leader-election identity (default: $POD_NAME or host name, pid, random)",
    )
    run.add_argument(
        "--propagation-delay",
        default=os.environ.get("TRUSTWARDEN_PROPAGATION_DELAY", "2m"),
        metavar="DURATION",
        help="worst case before a pod sees a changed Secret or ConfigMap volume (the "
        "kubelet's sync period plus its cache TTL; default 2m). A forced CA rotation waits "
        "max(--min-activate-after, 1.5 x this) before the new authority signs",
    )
    run.add_argument(
        "--min-activate-after",
        default="3m",
        metavar="DURATION",
        help="floor of the derived default activation delay (default 3m); lower it only on "
        "clusters whose kubelet delays you have measured, e.g. test clusters",
    )
    run.add_argument(
        "--ca-recovery-grace",
        default="2m",
        metavar="DURATION",
        help="when a self-signed CA Secret is lost and no copy is in memory, the new authority "
        "is published in the bundles at once and signs only after this long (default 2m), so "
        "pods see the new anchor before certificates it signed",
    )
    run.add_argument(
        "--flush-interval",
        default="500ms",
        metavar="DURATION",
        help="how often changed trust bundles and revocation lists are written (default 500ms)",
    )
    run.add_argument(
        "--status-interval",
        default="2s",
        metavar="DURATION",
        help="how often changed statuses are written (default 2s)",
    )
    run.add_argument(
        "--status-timing-interval",
        default="30s",
        metavar="DURATION",
        help="a status change that only moves timing fields (nextRenewal, soonestExpiry) is "
        "written at most this often (default 30s)",
    )
    run.add_argument(
        "--ledger-interval",
        default="5s",
        metavar="DURATION",
        help="how often the issuance ledger is persisted (default 5s); wider batches mean "
        "fewer writes and a longer window of serials known only from their Secrets",
    )
    run.add_argument(
        "--ledger-shards",
        type=int,
        default=16,
        metavar="N",
        help="ConfigMaps the issuance ledger is spread over at first (default 16); it doubles "
        "as it grows, and a smaller N never shrinks what is stored",
    )
    run.add_argument(
        "--max-jitter",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="renewals are spread by up to this fraction of a certificate's lifetime before "
        "its renew point (default 0.1)",
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def _common(*, namespaced: bool) -> argparse.ArgumentParser:
    """Flags every operations command takes, kubectl style (also after the subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    if namespaced:
        common.add_argument(
            "-n",
            "--namespace",
            help="namespace (default: the kubeconfig context's namespace, else default)",
        )
    common.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig file"
    )
    common.add_argument("--context", help="kubeconfig context")
    common.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="timeout of each API request (default 30)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show stack traces"
    )
    return common


def _add_ops(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    namespaced = _common(namespaced=True)
    cluster = _common(namespaced=False)

    inventory = subparsers.add_parser(
        "inventory",
        parents=[namespaced],
        help="list every issued certificate, its state and expiry",
        description="List every certificate trustwarden issued (Secrets labelled "
        "app.kubernetes.io/managed-by=trustwarden with a trustwarden.io/identity label). "
        "Exit status 1 when any is expired, failed or invalid (for cron), 0 otherwise.",
    )
    inventory.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    inventory.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json", "csv"),
        default="table",
        help="table (fits 80 columns, the default), wide (every column), json or csv",
    )
    inventory.add_argument(
        "--expiring-within",
        metavar="DURATION",
        help="only certificates whose notAfter is within DURATION (e.g. 1h, 90m); "
        "expired ones included",
    )
    inventory.add_argument(
        "--owner", help="only this owner (spec.owner); shell patterns such as 'team-*' work"
    )
    inventory.add_argument(
        "--operator-namespace",
        default=os.environ.get("TRUSTWARDEN_NAMESPACE", "trustwarden-system"),
        help="the operator's namespace, left out of the inventory (default trustwarden-system)",
    )

    verify = subparsers.add_parser(
        "verify",
        parents=[namespaced],
        help="check one certificate Secret: chain, SPIFFE, key pair, revocation, validity",
        description="Check a certificate Secret against its namespace's trustwarden-bundle. "
        "Prints PASS/FAIL per check; exit status 1 when any check fails.",
    )
    verify.add_argument("secret", nargs="?", metavar="SECRET", help="Secret name")
    verify.add_argument(
        "--from-file",
        metavar="PATH",
        help="check a saved Secret (kubectl get secret -o yaml|json) or PEM file instead of "
        "the live Secret, against the live bundle of -n NAMESPACE ('-' reads stdin)",
    )

    revoke = subparsers.add_parser(
        "revoke",
        parents=[namespaced],
        help="revoke certificates now and have the operator issue new ones",
        description="Emergency revocation: annotate the Secret(s) with trustwarden.io/revoke; "
        "the operator lists the serial in the trust domain's CRL at once and writes a fresh "
        "key and certificate into the same Secret.",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--identity", metavar="NAME", help="every Secret of this WorkloadIdentity")
    which.add_argument("--pod", metavar="NAME", help="the Secret of this pod")
    which.add_argument(
        "--serial", metavar="HEX", help="the Secret holding this serial (colons allowed)"
    )
    revoke.add_argument("--reason", required=True, help="why (recorded in the Revoked Event)")
    revoke.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    revoke.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until every Secret holds a new serial and the CRL lists the old one "
        "(default: wait)",
    )
    revoke.add_argument(
        "--timeout", default="60s", metavar="DURATION", help="how long to wait (default 60s)"
    )

    ca = subparsers.add_parser("ca", help="trust domain authorities: status and rotation")
    ca_commands = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    status = ca_commands.add_parser(
        "status",
        parents=[cluster],
        help="authorities, conditions and per-namespace bundle coverage of a TrustDomain",
    )
    status.add_argument("trust_domain", metavar="TRUSTDOMAIN", help="TrustDomain name")
    status.add_argument(
        "-o", "--output", choices=("table", "wide", "json"), default="table", help="output format"
    )
    rotate = ca_commands.add_parser(
        "rotate",
        parents=[cluster],
        help="prepare, publish and activate a new authority now",
        description="Ask the operator to rotate a self-signed CA now: it prepares a new "
        "authority, publishes it in every entitled bundle, and activates it after "
        "--activate-after once every bundle holds it. Shows progress until it is Active.",
    )
    rotate.add_argument("trust_domain", metavar="TRUSTDOMAIN", help="TrustDomain name")
    rotate.add_argument(
        "--activate-after",
        default=None,
        metavar="DURATION",
        help="how long the new anchor is published before it signs (default: the "
        "operator's max(3m, 1.5 x propagationDelay), shown by `ca status`). A shorter value "
        "asks for confirmation (or --force): pods whose kubelet has not yet written the new "
        "anchor would reject the new certificates",
    )
    mode = rotate.add_mutually_exclusive_group()
    mode.add_argument(
        "--cross-sign",
        action="store_true",
        help="the old authority certifies the new one and re-issued certificates carry that "
        "cross-certificate, so clients that still trust only the old anchor verify them: "
        "safe with a short --activate-after (the old key must not be compromised)",
    )
    mode.add_argument(
        "--compromised",
        action="store_true",
        help="the old key may be compromised: no cross-signing, activate at once, drop the "
        "old anchor and revoke its certificates. Clients with stale trust stores FAIL until "
        "their volumes update",
    )
    rotate.add_argument(
        "--force",
        action="store_true",
        help="accept an --activate-after shorter than the default without asking",
    )
    rotate.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rotate.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the rotation until the new authority is Active (default: wait)",
    )
    rotate.add_argument(
        "--timeout",
        metavar="DURATION",
        help="how long to wait (default: the activation delay plus 2m)",
    )


def _prog() -> str:
    return (
        "kubectl trustwarden"
        if os.path.basename(sys.argv[0]) == "kubectl-trustwarden"
        else "trustwarden"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__)
    parser.add_argument("--version", action="version", version=f"trustwarden {__version__}")
    parser.add_argument("--debug", action="store_true", help="show stack traces on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(subparsers)
    _add_ops(subparsers)
    return parser


def _run_duration(text: str, flag: str) -> timedelta:
    from trustwarden.ops.commands import parse_duration_arg

    return parse_duration_arg(text, flag)


def _run(args: argparse.Namespace) -> int:
    # The operator talks to the API through aiohttp (trustwarden.k8s.http). kopf imports the
    # `kubernetes` client when it is installed, only to recognise its model classes, which
    # this process never hands it; refusing that import saves every replica about 25 MiB.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from trustwarden.handlers.runner import run
    from trustwarden.handlers.services import OperatorConfig

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per admission review
    # In a pod the chart sets POD_NAME, so the Lease names the pod (a hostNetwork pod's host
    # name is its node's); pid and a random part keep a restarted container a new candidate.
    host = os.environ.get("POD_NAME") or socket.gethostname()
    identity = args.identity or f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    propagation_delay = _run_duration(args.propagation_delay, "--propagation-delay")
    min_activate_after = _run_duration(args.min_activate_after, "--min-activate-after")
    ca_recovery_grace = _run_duration(args.ca_recovery_grace, "--ca-recovery-grace")
    intervals = {
        flag: _run_duration(getattr(args, flag.removeprefix("--").replace("-", "_")), flag)
        for flag in (
            "--flush-interval",
            "--status-interval",
            "--status-timing-interval",
            "--ledger-interval",
        )
    }
    for flag, value in intervals.items():
        if value <= timedelta(0):
            raise SystemExit(
                f"{flag} must be positive, got {args.__dict__[flag[2:].replace('-', '_')]}"
            )
    if args.ledger_shards < 1:
        raise SystemExit(f"--ledger-shards must be at least 1, got {args.ledger_shards}")
    if not 0 <= args.max_jitter < 1:
        raise SystemExit(f"--max-jitter must be in [0, 1), got {args.max_jitter}")
    bind_address = args.bind_address or ("127.0.0.1" if args.local else "0.0.0.0")  # noqa: S104
    try:
        ipaddress.ip_address(bind_address)
    except ValueError:
        raise SystemExit(
            f"--bind-address must be an IP address (e.g. the pod IP), got {bind_address!r}"
        ) from None
    config = OperatorConfig(
        operator_namespace=args.namespace,
        local=args.local,
        kubeconfig=args.kubeconfig,
        context=args.context,
        watch_namespaces=list(args.watch_namespace),
        metrics_address=args.metrics_address or bind_address,
        metrics_port=args.metrics_port,
        health_address=bind_address,
        health_port=args.health_port,
        webhook_address=bind_address,
        webhook_port=args.webhook_port,
        webhook_service=args.webhook_service,
        webhook_configuration=args.webhook_configuration,
        concurrency=args.concurrency,
        max_concurrency=max(args.max_concurrency, args.concurrency),
        reissue_rate=args.reissue_rate,
        cluster_domain=args.cluster_domain,
        leader_elect=not args.no_leader_elect,
        lease_duration=args.lease_duration,
        identity=identity,
        propagation_delay=propagation_delay,
        min_activate_after=min_activate_after,
        ca_recovery_grace=ca_recovery_grace,
        max_jitter_fraction=args.max_jitter,
        ledger_shards=args.ledger_shards,
        flush_interval=intervals["--flush-interval"],
        status_interval=intervals["--status-interval"],
        status_timing_interval=intervals["--status-timing-interval"],
        ledger_interval=intervals["--ledger-interval"],
    )
    asyncio.run(run(config))
    return 0


def make_port(args: argparse.Namespace) -> OpsPort:
    """The cluster connection for the operations commands (tests replace this)."""
    from trustwarden.k8s.ops_client import OpsClient

    return OpsClient(args.kubeconfig, args.context, request_timeout=args.request_timeout)


def now() -> datetime:
    """The clock of the operations commands (tests pin it)."""
    return datetime.now(UTC)


def _confirm(prompt: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer:
        print(file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")


def _width() -> int:
    if sys.stdout.isatty():
        return max(80, shutil.get_terminal_size((80, 24)).columns)
    return 80


def _ops(args: argparse.Namespace) -> int:
    from trustwarden.ops import commands

    port = make_port(args)
    ctx = commands.Context(
        port=port,
        out=sys.stdout,
        err=sys.stderr,
        confirm=_confirm,
        clock=lambda: now(),
        width=_width(),
    )
    namespace: str | None = getattr(args, "namespace", None)
    if args.command == "inventory":
        if args.all_namespaces and namespace:
            raise UsageError("give either -n/--namespace or -A/--all-namespaces, not both")
        return commands.inventory(
            ctx,
            namespace=None if args.all_namespaces else (namespace or port.default_namespace()),
            output=args.output,
            expiring_within=commands.parse_duration_arg(args.expiring_within, "--expiring-within")
            if args.expiring_within
            else None,
            owner=args.owner,
            operator_namespace=args.operator_namespace,
        )
    if args.command == "verify":
        if (args.secret is None) == (args.from_file is None):
            raise UsageError("give a SECRET name or --from-file PATH (one of them)")
        source = None
        if args.from_file is not None:
            path = args.from_file
            try:
                content = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            source = (path, content)
        return commands.verify(ctx, namespace=namespace, secret_name=args.secret, from_file=source)
    if args.command == "revoke":
        return commands.revoke(
            ctx,
            namespace=namespace or port.default_namespace(),
            reason=args.reason,
            identity=args.identity,
            pod=args.pod,
            serial=args.serial,
            yes=args.yes,
            wait=args.wait,
            timeout=commands.parse_duration_arg(args.timeout, "--timeout"),
        )
    if args.command == "ca" and args.ca_command == "status":
        return commands.ca_status(ctx, name=args.trust_domain, output=args.output)
    if args.command == "ca" and args.ca_command == "rotate":
        return commands.ca_rotate(
            ctx,
            name=args.trust_domain,
            activate_after=args.activate_after,
            cross_sign=args.cross_sign,
            compromised=args.compromised,
            force=args.force,
            yes=args.yes,
            wait=args.wait,
            timeout=commands.parse_duration_arg(args.timeout, "--timeout")
            if args.timeout
            else None,
        )
    raise UsageError(f"unknown command {args.command}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            return _run(args)
        return _ops(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        from trustwarden.ops.errors import OpsError

        command = args.command + (f" {args.ca_command}" if args.command == "ca" else "")
        print(f"trustwarden {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, OpsError) else 1


if __name__ == "__main__":
    sys.exit(main())
