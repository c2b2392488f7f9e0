"""SPIFFE IDs, trust domain names and the identity templates of a WorkloadIdentity.

Validation follows the SPIFFE ID specification
(https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md). Templates are parsed
strictly: only the documented variables exist, substituted values can never introduce ``/``
or dot segments, and every rendered path must stay under ``/ns/<namespace>/`` so that a
namespace can never mint another namespace's identity.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidDNSNameError, InvalidSpiffeIDError, TemplateError

__all__ = [
    "DEFAULT_SPIFFE_TEMPLATE",
    "MAX_DNS_NAMES",
    "MAX_TEMPLATE_LENGTH",
    "MAX_TEMPLATE_VARIABLES",
    "SPIFFE_SCHEME",
    "SpiffeID",
    "TemplateContext",
    "render_dns_names",
    "render_spiffe_id",
    "render_spiffe_path",
    "template_variables",
    "trust_domain_uri",
    "validate_dns_name",
    "validate_dns_template",
    "validate_spiffe_path",
    "validate_template",
    "validate_trust_domain",
]

SPIFFE_SCHEME: Final = "spiffe://"
DEFAULT_SPIFFE_TEMPLATE: Final = "/ns/{namespace}/sa/{serviceAccount}"
MAX_URI_BYTES: Final = 2048
MAX_TRUST_DOMAIN: Final = 255
MAX_TEMPLATE_LENGTH: Final = 512
MAX_TEMPLATE_VARIABLES: Final = 16
MAX_DNS_NAMES: Final = 100
MAX_DNS_NAME_LENGTH: Final = 253

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IPV4_LIKE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")

_VAR_NAMESPACE = "namespace"
_VAR_NAME = "name"
_VAR_SERVICE_ACCOUNT = "serviceAccount"
_VAR_POD_NAME = "pod.name"
_VAR_POD_UID = "pod.uid"
_VAR_TRUST_DOMAIN = "trustDomain"
_LABEL_PREFIX = "label:"
_KNOWN_VARIABLES: Final = (
    _VAR_NAMESPACE,
    _VAR_NAME,
    _VAR_SERVICE_ACCOUNT,
    _VAR_POD_NAME,
    _VAR_POD_UID,
    _VAR_TRUST_DOMAIN,
)
_POD_ONLY = frozenset({_VAR_POD_NAME, _VAR_POD_UID})
_VARIABLE_LIST = ", ".join("{" + v + "}" for v in _KNOWN_VARIABLES) + ", {label:KEY}"


def _describe_char(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X})"


# --------------------------------------------------------------------------- trust domains


def validate_trust_domain(name: str, *, field: str = "trust domain") -> str:
    """Validate a SPIFFE trust domain name and return it unchanged.

    Lowercase letters, digits, ``.``, ``-`` and ``_`` only; at most 255 characters; no
    scheme, port, user info or path.
    """
    if not isinstance(name, str):
        raise InvalidSpiffeIDError(f"{field}: expected a string, got {type(name).__name__}")
    if not name:
        raise InvalidSpiffeIDError(
            f"{field}: trust domain name is empty; use a DNS-like name such as prod.example.org"
        )
    if len(name) > MAX_TRUST_DOMAIN:
        raise InvalidSpiffeIDError(
            f"{field}: trust domain name is {len(name)} characters long; the SPIFFE limit is "
            f"{MAX_TRUST_DOMAIN}, use a shorter name"
        )
    shown = name[:80]
    if "://" in name:
        raise InvalidSpiffeIDError(
            f"{field}: {shown!r} includes a URI scheme; give the bare trust domain name, "
            f"e.g. {name.split('://', 1)[1].split('/', 1)[0][:60]!r}"
        )
    if "@" in name:
        raise InvalidSpiffeIDError(
            f"{field}: {shown!r} contains user info ('@'); trust domain names cannot carry "
            "user info, remove it"
        )
    if ":" in name:
        raise InvalidSpiffeIDError(
            f"{field}: {shown!r} contains a port (':'); trust domain names cannot carry a "
            "port, remove it"
        )
    if "/" in name:
        raise InvalidSpiffeIDError(
            f"{field}: {shown!r} contains '/'; a trust domain name has no path, remove it"
        )
    for pos, ch in enumerate(name):
        if ch not in _TRUST_DOMAIN_CHARS:
            if ch.isascii() and ch.isupper():
                raise InvalidSpiffeIDError(
                    f"{field}: {shown!r} contains uppercase letters; trust domain names must "
                    f"be lowercase, use {name.lower()[:80]!r}"
                )
            raise InvalidSpiffeIDError(
                f"{field}: character {_describe_char(ch)} at position {pos} of {shown!r} is "
                "not allowed; trust domain names may contain only lowercase letters, digits, "
                "'.', '-' and '_'"
            )
    return name


def trust_domain_uri(trust_domain: str) -> str:
    """``spiffe://<trust domain>``: the ID of the trust domain itself (used on CA certs)."""
    return SPIFFE_SCHEME + validate_trust_domain(trust_domain)


# --------------------------------------------------------------------------- paths


def validate_spiffe_path(
    path: str, *, trust_domain: str | None = None, field: str = "SPIFFE ID path"
) -> str:
    """Validate the path of a workload SPIFFE ID and return it unchanged.

    It must start with ``/``; segments are non-empty, are not ``.`` or ``..`` and use only
    ``[A-Za-z0-9.-_]``; the whole ``spiffe://`` URI stays within 2048 bytes.
    """
    if not isinstance(path, str):
        raise InvalidSpiffeIDError(f"{field}: expected a string, got {type(path).__name__}")
    if not path:
        raise InvalidSpiffeIDError(
            f"{field}: path is empty; a workload SPIFFE ID needs a path such as "
            "/ns/default/sa/default"
        )
    budget = MAX_URI_BYTES - len(SPIFFE_SCHEME) - len(trust_domain or "x")
    if len(path.encode("utf-8")) > budget:
        raise InvalidSpiffeIDError(
            f"{field}: path is {len(path.encode('utf-8'))} bytes; the whole SPIFFE ID must fit "
            f"in {MAX_URI_BYTES} bytes, so the path may use at most {budget}; shorten it"
        )
    shown = path[:80]
    if not path.startswith("/"):
        raise InvalidSpiffeIDError(f"{field}: path {shown!r} must start with '/'")
    if path.endswith("/"):
        raise InvalidSpiffeIDError(
            f"{field}: path {shown!r} must not end with '/'; remove the trailing slash"
        )
    offset = 1
    for segment in path[1:].split("/"):
        if not segment:
            raise InvalidSpiffeIDError(
                f"{field}: path {shown!r} has an empty segment ('//') at position {offset}; "
                "remove the doubled slash"
            )
        if segment in {".", ".."}:
            raise InvalidSpiffeIDError(
                f"{field}: path {shown!r} contains the dot segment {segment!r}; "
                "'.' and '..' segments are forbidden by the SPIFFE spec"
            )
        for i, ch in enumerate(segment):
            if ch not in _PATH_CHARS:
                raise InvalidSpiffeIDError(
                    f"{field}: character {_describe_char(ch)} at position {offset + i} of "
                    f"path {shown!r} is not allowed; path segments may contain only letters, "
                    "digits, '.', '-' and '_' (no percent-encoding)"
                )
        offset += len(segment) + 1
    return path


@dataclass(frozen=True, slots=True)
class SpiffeID:
    """A workload SPIFFE ID: ``spiffe://<trust_domain><path>``."""

    trust_domain: str
    path: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        validate_spiffe_path(self.path, trust_domain=self.trust_domain)

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}{self.path}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str, *, field: str = "SPIFFE ID") -> SpiffeID:
        """Parse ``spiffe://td/path``; errors say which rule the URI breaks."""
        if not isinstance(uri, str):
            raise InvalidSpiffeIDError(f"{field}: expected a string, got {type(uri).__name__}")
        if len(uri.encode("utf-8")) > MAX_URI_BYTES:
            raise InvalidSpiffeIDError(
                f"{field}: URI is longer than {MAX_URI_BYTES} bytes; shorten the path"
            )
        shown = uri[:80]
        if not uri.startswith(SPIFFE_SCHEME):
            if uri[: len(SPIFFE_SCHEME)].lower() == SPIFFE_SCHEME:
                raise InvalidSpiffeIDError(
                    f"{field}: {shown!r} must use the lowercase scheme 'spiffe://'"
                )
            raise InvalidSpiffeIDError(
                f"{field}: {shown!r} is not a SPIFFE ID; it must start with 'spiffe://'"
            )
        rest = uri[len(SPIFFE_SCHEME) :]
        if "?" in rest or "#" in rest:
            raise InvalidSpiffeIDError(
                f"{field}: {shown!r} contains a query or fragment; SPIFFE IDs allow neither"
            )
        trust_domain, slash, path = rest.partition("/")
        validate_trust_domain(trust_domain, field=f"{field} trust domain")
        if not slash:
            raise InvalidSpiffeIDError(
                f"{field}: {shown!r} names only a trust domain; a workload SPIFFE ID needs a "
                "path such as /ns/default/sa/default"
            )
        return cls(trust_domain, "/" + path)


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class TemplateContext:
    """The values a template may use. ``pod_name is None`` means a Shared identity."""

    namespace: str
    name: str
    service_account: str
    trust_domain: str
    pod_name: str | None = None
    pod_uid: str | None = None
    pod_labels: Mapping[str, str] | None = field(default=None, hash=False)

    @property
    def shared(self) -> bool:
        return self.pod_name is None


@dataclass(frozen=True, slots=True)
class _Token:
    literal: str | None = None
    variable: str | None = None


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, [*_KNOWN_VARIABLES, "label:"], n=1, cutoff=0.6)
    if close:
        return f" (did you mean {{{close[0]}}}?)" if close[0] != "label:" else " ({label:KEY}?)"
    return ""


def _validate_label_key(key: str, field: str, template: str) -> None:
    problem = None
    if not key:
        problem = "the label key is empty"
    else:
        prefix, slash, label_name = key.rpartition("/")
        if (slash and (not prefix or len(prefix) > MAX_DNS_NAME_LENGTH)) or (
            slash and not all(_DNS_LABEL.fullmatch(p) for p in prefix.split("."))
        ):
            problem = f"the label key prefix {prefix!r} is not a DNS subdomain"
        elif not _LABEL_NAME.fullmatch(label_name):
            problem = f"{label_name!r} is not a valid label name (max 63 of [A-Za-z0-9-_.])"
    if problem:
        raise TemplateError(
            f"{field}: {{label:{key[:80]}}} in template {template[:80]!r}: {problem}; "
            "use a Kubernetes label key such as app or app.kubernetes.io/name"
        )


# Parsed templates are cached: every issuance renders the same few templates, and parsing
# (with its checks) cost more than rendering. Errors are not cached; they are raised again.
_TEMPLATE_CACHE_SIZE = 1024


def _require_template_string(template: object, field: str) -> None:
    if not isinstance(template, str):
        raise TemplateError(f"{field}: expected a template string, got {type(template).__name__}")


def _parse_template(template: str, shared: bool, field: str) -> tuple[_Token, ...]:
    _require_template_string(template, field)
    return _parse_checked_template(template, shared, field)


@functools.lru_cache(maxsize=_TEMPLATE_CACHE_SIZE)
def _parse_checked_template(template: str, shared: bool, field: str) -> tuple[_Token, ...]:
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            f"{field}: template is {len(template)} characters long; the limit is "
            f"{MAX_TEMPLATE_LENGTH}, shorten it"
        )
    shown = template[:80]
    for pos, ch in enumerate(template):
        if not ch.isascii() or not ch.isprintable():
            raise TemplateError(
                f"{field}: template {shown!r} contains the character {_describe_char(ch)} at "
                f"position {pos}; only printable ASCII is allowed (watch for look-alike "
                "Unicode letters pasted from documents)"
            )
    tokens: list[_Token] = []
    variables = 0
    pos = 0
    while pos < len(template):
        open_at = template.find("{", pos)
        close_at = template.find("}", pos)
        if close_at != -1 and (open_at == -1 or close_at < open_at):
            raise TemplateError(
                f"{field}: template {shown!r} has an unmatched '}}' at position {close_at}; "
                "variables are written {namespace}"
            )
        if open_at == -1:
            tokens.append(_Token(literal=template[pos:]))
            break
        if open_at > pos:
            tokens.append(_Token(literal=template[pos:open_at]))
        if close_at == -1:
            raise TemplateError(
                f"{field}: template {shown!r} has an unterminated '{{' at position {open_at}; "
                "close the variable with '}'"
            )
        nested = template.find("{", open_at + 1, close_at)
        if nested != -1:
            raise TemplateError(
                f"{field}: template {shown!r} has a '{{' inside a variable at position "
                f"{nested}; variables cannot be nested"
            )
        name = template[open_at + 1 : close_at]
        variables += 1
        if variables > MAX_TEMPLATE_VARIABLES:
            raise TemplateError(
                f"{field}: template {shown!r} uses more than {MAX_TEMPLATE_VARIABLES} "
                "variables; simplify it"
            )
        if name.startswith(_LABEL_PREFIX):
            _validate_label_key(name[len(_LABEL_PREFIX) :], field, template)
        elif name not in _KNOWN_VARIABLES:
            raise TemplateError(
                f"{field}: unknown variable {{{name[:60]}}} in template {shown!r}"
                f"{_suggest(name)}; the variables are {_VARIABLE_LIST}"
            )
        if shared and (name in _POD_ONLY or name.startswith(_LABEL_PREFIX)):
            raise TemplateError(
                f"{field}: variable {{{name[:60]}}} needs a pod, but this is a Shared "
                "identity (no pod); use {namespace}, {name}, {serviceAccount} or "
                "{trustDomain}, or switch delivery.mode to PerPod"
            )
        tokens.append(_Token(variable=name))
        pos = close_at + 1
    return tuple(tokens)


_PLACEHOLDER = "x"
_NAMESPACE_PREFIX_ERROR = (
    "the SPIFFE ID must start with /ns/{namespace}/ so that a namespace can never mint "
    "another namespace's identity"
)


def validate_template(template: str, shared: bool, *, field: str = "spec.spiffeID") -> None:
    """Check a SPIFFE ID path template without values (webhook, status).

    Rejects unknown variables, pod variables in a Shared identity, templates that do not
    start with ``/ns/{namespace}/``, and templates whose shape can never be a valid path.
    """
    _path_template_tokens(template, shared, field)


def _path_template_tokens(template: str, shared: bool, field: str) -> tuple[_Token, ...]:
    _require_template_string(template, field)
    return _checked_path_tokens(template, shared, field)


@functools.lru_cache(maxsize=_TEMPLATE_CACHE_SIZE)
def _checked_path_tokens(template: str, shared: bool, field: str) -> tuple[_Token, ...]:
    tokens = _parse_checked_template(template, shared, field)
    if (
        len(tokens) < 3
        or tokens[0].literal != "/ns/"
        or tokens[1].variable != _VAR_NAMESPACE
        or not (tokens[2].literal or "").startswith("/")
    ):
        raise TemplateError(
            f"{field}: template {template[:80]!r} is not allowed: "
            f"{_NAMESPACE_PREFIX_ERROR}; e.g. {DEFAULT_SPIFFE_TEMPLATE}"
        )
    sample = "".join(t.literal if t.literal is not None else _PLACEHOLDER for t in tokens)
    try:
        validate_spiffe_path(sample, field=field)
    except InvalidSpiffeIDError as exc:
        raise TemplateError(
            f"{field}: template {template[:80]!r} can never render to a valid SPIFFE ID path: "
            f"{_strip_field(str(exc), field)}"
        ) from None
    return tokens


def template_variables(template: str, *, field: str = "template") -> frozenset[str]:
    """The variables a template uses (``namespace``, ``pod.name``, ``label:app``, ...)."""
    return frozenset(
        t.variable for t in _parse_template(template, False, field) if t.variable is not None
    )


def validate_dns_template(template: str, shared: bool, *, field: str = "spec.dnsNames") -> None:
    """Check a DNS name template without values."""
    tokens = _parse_template(template, shared, field)
    sample = "".join(t.literal if t.literal is not None else _PLACEHOLDER for t in tokens)
    try:
        validate_dns_name(sample, field=field)
    except InvalidDNSNameError as exc:
        raise InvalidDNSNameError(
            f"{field}: template {template[:80]!r} can never render to a valid DNS name: "
            f"{_strip_field(str(exc), field)}"
        ) from None


def _strip_field(message: str, field: str) -> str:
    prefix = f"{field}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _value_for(name: str, ctx: TemplateContext, field: str, template: str) -> str:
    value: str | None
    if name == _VAR_NAMESPACE:
        value = ctx.namespace
    elif name == _VAR_NAME:
        value = ctx.name
    elif name == _VAR_SERVICE_ACCOUNT:
        value = ctx.service_account
    elif name == _VAR_TRUST_DOMAIN:
        value = ctx.trust_domain
    elif name in _POD_ONLY:
        if ctx.shared:
            raise TemplateError(
                f"{field}: variable {{{name}}} needs a pod, but this is a Shared identity"
            )
        value = ctx.pod_name if name == _VAR_POD_NAME else ctx.pod_uid
        if value is None:
            raise TemplateError(
                f"{field}: {{{name}}} in template {template[:80]!r} has no value: pod "
                f"{ctx.pod_name!r} has no UID yet; retry once the pod is created"
            )
    else:
        key = name[len(_LABEL_PREFIX) :]
        labels = ctx.pod_labels or {}
        value = labels.get(key)
        if value is None:
            raise TemplateError(
                f"{field}: {{{name[:80]}}} in template {template[:80]!r} has no value: pod "
                f"{ctx.namespace}/{ctx.pod_name} has no label {key[:80]!r}; add the label to "
                "the pod template or remove the variable"
            )
    return _check_value(name, value, field)


def _check_value(name: str, value: str, field: str) -> str:
    """A substituted value is one path segment piece: it can never add '/' or dot segments."""
    where = f"{field}: value {value[:64]!r} of {{{name[:80]}}}"
    if not value:
        raise TemplateError(f"{where} is empty; set it or remove the variable from the template")
    if "/" in value:
        raise TemplateError(
            f"{where} contains '/', which could climb out of the /ns/<namespace>/ prefix; "
            "change the value or remove the variable"
        )
    if ".." in value or value == ".":
        raise TemplateError(
            f"{where} contains a dot segment ('.' or '..'), which could climb out of the "
            "/ns/<namespace>/ prefix; change the value or remove the variable"
        )
    for ch in value:
        if ch not in _PATH_CHARS:
            raise TemplateError(
                f"{where} contains the character {_describe_char(ch)}; substituted values may "
                "contain only letters, digits, '.', '-' and '_'"
            )
    return value


def _render(tokens: Sequence[_Token], ctx: TemplateContext, field: str, template: str) -> str:
    out: list[str] = []
    for token in tokens:
        if token.literal is not None:
            out.append(token.literal)
        elif token.variable is not None:
            out.append(_value_for(token.variable, ctx, field, template))
    return "".join(out)


def render_spiffe_path(template: str, ctx: TemplateContext, *, field: str = "spec.spiffeID") -> str:
    """Render a SPIFFE ID path template; the result always lives under ``/ns/<namespace>/``."""
    tokens = _path_template_tokens(template, ctx.shared, field)
    path = _render(tokens, ctx, field, template)
    if not path.startswith(f"/ns/{ctx.namespace}/"):
        raise TemplateError(
            f"{field}: template {template[:80]!r} renders to {path[:80]!r}, outside "
            f"/ns/{ctx.namespace}/: {_NAMESPACE_PREFIX_ERROR}"
        )
    try:
        if not isinstance(ctx.trust_domain, str):
            validate_trust_domain(ctx.trust_domain)  # raises, naming the type
        _checked_trust_domain(ctx.trust_domain)
        return validate_spiffe_path(path, trust_domain=ctx.trust_domain, field=field)
    except InvalidSpiffeIDError as exc:
        raise TemplateError(
            f"{field}: template {template[:80]!r} renders to an invalid SPIFFE ID: "
            f"{_strip_field(str(exc), field)}"
        ) from None


@functools.lru_cache(maxsize=_TEMPLATE_CACHE_SIZE)
def _checked_trust_domain(name: str) -> str:
    return validate_trust_domain(name)


def render_spiffe_id(
    template: str, ctx: TemplateContext, *, field: str = "spec.spiffeID"
) -> SpiffeID:
    """Render a template into a full :class:`SpiffeID` in ``ctx.trust_domain``."""
    return SpiffeID(ctx.trust_domain, render_spiffe_path(template, ctx, field=field))


# --------------------------------------------------------------------------- DNS names


def validate_dns_name(name: str, *, field: str = "DNS name") -> str:
    """Validate an RFC 1123 host name (no wildcards, no IPs) and return it in lowercase."""
    if not isinstance(name, str):
        raise InvalidDNSNameError(f"{field}: expected a string, got {type(name).__name__}")
    shown = name[:80]
    if not name:
        raise InvalidDNSNameError(f"{field}: DNS name is empty")
    if len(name) > MAX_DNS_NAME_LENGTH:
        raise InvalidDNSNameError(
            f"{field}: DNS name {shown!r}... is {len(name)} characters; the limit is "
            f"{MAX_DNS_NAME_LENGTH}"
        )
    if not name.isascii():
        raise InvalidDNSNameError(
            f"{field}: DNS name {shown!r} contains non-ASCII characters; write "
            "internationalised names in punycode (xn--...)"
        )
    if "*" in name:
        raise InvalidDNSNameError(
            f"{field}: DNS name {shown!r} is a wildcard; wildcards are not allowed in "
            "workload identities, list each name"
        )
    lowered = name.lower()
    if lowered.endswith("."):
        raise InvalidDNSNameError(
            f"{field}: DNS name {shown!r} ends with '.'; remove the trailing dot"
        )
    if _IPV4_LIKE.fullmatch(lowered):
        raise InvalidDNSNameError(
            f"{field}: {shown!r} is an IP address, not a DNS name; IP SANs are not supported"
        )
    for label in lowered.split("."):
        if not _DNS_LABEL.fullmatch(label):
            raise InvalidDNSNameError(
                f"{field}: DNS name {shown!r} has an invalid label {label[:64]!r}; labels are "
                "1-63 characters of a-z, 0-9 and '-', and cannot start or end with '-'"
            )
    return lowered


def render_dns_names(
    templates: Sequence[str], ctx: TemplateContext, *, field: str = "spec.dnsNames"
) -> list[str]:
    """Render DNS name templates: each result is validated, lowercased, and duplicates are
    dropped keeping the first occurrence's position."""
    if isinstance(templates, str):
        raise TemplateError(f"{field}: expected a list of templates, got a single string")
    if len(templates) > MAX_DNS_NAMES:
        raise TemplateError(
            f"{field}: {len(templates)} DNS names requested; the limit is {MAX_DNS_NAMES}, "
            "use a Shared identity per service instead"
        )
    seen: dict[str, None] = {}
    for index, template in enumerate(templates):
        item = f"{field}[{index}]"
        tokens = _parse_template(template, ctx.shared, item)
        rendered = _render(tokens, ctx, item, template)
        try:
            seen.setdefault(validate_dns_name(rendered, field=item), None)
        except InvalidDNSNameError as exc:
            raise InvalidDNSNameError(
                f"{item}: template {template[:80]!r} renders to an invalid DNS name: "
                f"{_strip_field(str(exc), item)}"
            ) from None
    return list(seen)
