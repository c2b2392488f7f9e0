from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trustwarden.pki import (
    InvalidDNSNameError,
    InvalidSpiffeIDError,
    PKIError,
    SpiffeID,
    TemplateContext,
    TemplateError,
    render_dns_names,
    render_spiffe_id,
    render_spiffe_path,
    validate_dns_name,
    validate_dns_template,
    validate_spiffe_path,
    validate_template,
    validate_trust_domain,
)
from trustwarden.pki.spiffe import MAX_TEMPLATE_LENGTH

TD = "prod.example.org"


def pod_ctx(**overrides: object) -> TemplateContext:
    values: dict[str, object] = {
        "namespace": "payments",
        "name": "payments-api",
        "service_account": "payments",
        "trust_domain": TD,
        "pod_name": "payments-7d9f-abcde",
        "pod_uid": "3f1c2a4e-9b1d-4c1e-8f00-0123456789ab",
        "pod_labels": {"app": "payments", "app.kubernetes.io/version": "v1.2.3"},
    }
    values.update(overrides)
    return TemplateContext(**values)  # type: ignore[arg-type]


def shared_ctx() -> TemplateContext:
    return TemplateContext("payments", "payments-api", "payments", TD)


# --------------------------------------------------------------------------- trust domains


@pytest.mark.parametrize("name", ["example.org", "prod.example.org", "td_1-x", "a", "x" * 255])
def test_valid_trust_domains(name: str) -> None:
    assert validate_trust_domain(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "trust domain name is empty"),
        (
            "spiffe://example.org",
            "includes a URI scheme; give the bare trust domain name, e.g. 'example.org'",
        ),
        ("example.org:8443", "contains a port"),
        ("user@example.org", "contains user info"),
        ("example.org/path", "contains '/'"),
        ("Example.org", "must be lowercase, use 'example.org'"),
        ("exa mple.org", "character ' ' (U+0020) at position 3"),
        ("ex\u0430mple.org", "U+0430"),
        ("x" * 256, "the SPIFFE limit is 255"),
    ],
)
def test_invalid_trust_domains(name: str, fragment: str) -> None:
    with pytest.raises(InvalidSpiffeIDError) as err:
        validate_trust_domain(name, field="spec.trustDomain")
    assert fragment in str(err.value)
    assert str(err.value).startswith("spec.trustDomain: ")


# --------------------------------------------------------------------------- paths / IDs


@pytest.mark.parametrize("path", ["/ns/a/sa/b", "/a", "/A.b-c_d/E", "/..a/b..", "/x" * 100])
def test_valid_paths(path: str) -> None:
    assert validate_spiffe_path(path) == path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "path is empty"),
        ("ns/a", "must start with '/'"),
        ("/ns/a/", "must not end with '/'"),
        ("/ns//a", "has an empty segment ('//')"),
        ("/ns/./a", "dot segment '.'"),
        ("/ns/../a", "dot segment '..'"),
        ("/ns/a b", "character ' ' (U+0020) at position 5"),
        ("/ns/%2e%2e", "character '%' (U+0025)"),
        ("/ns/caf\u00e9", "U+00E9"),
        ("/" + "a" * 2100, "must fit in 2048 bytes"),
    ],
)
def test_invalid_paths(path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpiffeIDError) as err:
        validate_spiffe_path(path)
    assert fragment in str(err.value)


def test_uri_length_counts_the_trust_domain() -> None:
    path = "/" + "a" * (2048 - len("spiffe://") - len("x") - 1)
    validate_spiffe_path(path, trust_domain="x")
    with pytest.raises(InvalidSpiffeIDError, match="at most 2037"):
        validate_spiffe_path(path, trust_domain="xx")


def test_spiffe_id_parse_and_uri() -> None:
    sid = SpiffeID.parse("spiffe://prod.example.org/ns/a/sa/b")
    assert sid == SpiffeID("prod.example.org", "/ns/a/sa/b")
    assert sid.uri == str(sid) == "spiffe://prod.example.org/ns/a/sa/b"


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("https://example.org/a", "it must start with 'spiffe://'"),
        ("SPIFFE://example.org/a", "must use the lowercase scheme"),
        ("spiffe://example.org", "names only a trust domain"),
        ("spiffe://example.org/a?x=1", "query or fragment"),
        ("spiffe://example.org/a#f", "query or fragment"),
        ("spiffe://Example.org/a", "must be lowercase"),
        ("spiffe://example.org:443/a", "contains a port"),
        ("spiffe://u@example.org/a", "contains user info"),
        ("spiffe:///a", "trust domain name is empty"),
        ("spiffe://example.org/a/", "must not end with '/'"),
    ],
)
def test_spiffe_id_parse_errors(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidSpiffeIDError) as err:
        SpiffeID.parse(uri)
    assert fragment in str(err.value)


_td_chars = string.ascii_lowercase + string.digits + ".-_"
_seg_chars = string.ascii_letters + string.digits + ".-_"
trust_domains = st.text(_td_chars, min_size=1, max_size=40)
segments = st.text(_seg_chars, min_size=1, max_size=12).filter(lambda s: s not in {".", ".."})


@settings(max_examples=80, deadline=None)
@given(trust_domains, st.lists(segments, min_size=1, max_size=6))
def test_spiffe_id_round_trip(td: str, segs: list[str]) -> None:
    sid = SpiffeID(td, "/" + "/".join(segs))
    assert SpiffeID.parse(sid.uri) == sid


@settings(max_examples=120, deadline=None)
@given(st.text(max_size=60))
def test_parse_arbitrary_text_is_typed(text: str) -> None:
    """Any string either parses into an ID that re-serialises identically, or raises the
    typed error; never anything else."""
    try:
        sid = SpiffeID.parse("spiffe://" + text)
    except InvalidSpiffeIDError:
        return
    assert sid.uri == "spiffe://" + text
    assert all(seg not in {"", ".", ".."} for seg in sid.path.split("/")[1:])


# --------------------------------------------------------------------------- templates


def test_default_template_renders() -> None:
    assert render_spiffe_path("/ns/{namespace}/sa/{serviceAccount}", pod_ctx()) == (
        "/ns/payments/sa/payments"
    )


def test_every_variable_renders() -> None:
    template = (
        "/ns/{namespace}/wid/{name}/sa/{serviceAccount}/pod/{pod.name}/uid/{pod.uid}"
        "/td/{trustDomain}/app/{label:app}/v/{label:app.kubernetes.io/version}"
    )
    sid = render_spiffe_id(template, pod_ctx())
    assert sid.uri == (
        "spiffe://prod.example.org/ns/payments/wid/payments-api/sa/payments/pod/"
        "payments-7d9f-abcde/uid/3f1c2a4e-9b1d-4c1e-8f00-0123456789ab/td/prod.example.org"
        "/app/payments/v/v1.2.3"
    )


def test_shared_identity_renders_without_pod() -> None:
    assert render_spiffe_path("/ns/{namespace}/wid/{name}", shared_ctx()) == (
        "/ns/payments/wid/payments-api"
    )


@pytest.mark.parametrize(
    ("template", "shared", "fragment"),
    [
        (
            "/ns/{namespace}/pod/{pod.name}",
            True,
            "variable {pod.name} needs a pod, but this is a Shared identity (no pod)",
        ),
        ("/ns/{namespace}/{label:app}", True, "variable {label:app} needs a pod"),
        ("/ns/{namespace}/{pod.uid}", True, "variable {pod.uid} needs a pod"),
        (
            "/ns/{namespace}/sa/{serviceaccount}",
            False,
            "unknown variable {serviceaccount} in template '/ns/{namespace}/sa/{serviceaccount}' "
            "(did you mean {serviceAccount}?)",
        ),
        ("/ns/{namespace}/{pod.namespace}", False, "unknown variable {pod.namespace}"),
        ("/ns/{namespace}/{env:HOME}", False, "unknown variable {env:HOME}"),
        ("/ns/{namespace}/{}", False, "unknown variable {}"),
        ("/ns/{namespace}/{a{b}}", False, "'{' inside a variable"),
        ("/ns/{namespace}/{name", False, "unterminated '{'"),
        ("/ns/{namespace}/name}", False, "unmatched '}'"),
        ("/sa/{serviceAccount}", False, "a namespace can never mint another namespace's identity"),
        ("/ns/other/sa/x", False, "a namespace can never mint another namespace's identity"),
        ("/ns/{namespace}x/sa", False, "a namespace can never mint another namespace's identity"),
        ("/ns/{namespace}", False, "a namespace can never mint another namespace's identity"),
        ("/ns/{name}/sa/x", False, "must start with /ns/{namespace}/"),
        ("/ns/{namespace}/{label:a}/../x", False, "contains the dot segment '..'"),
        ("/ns/{namespace}/./x", False, "contains the dot segment '.'"),
        ("/ns/{namespace}//x", False, "empty segment"),
        ("/ns/{namespace}/x/", False, "must not end with '/'"),
        ("/ns/{namespace}/a b", False, "character ' ' (U+0020)"),
        ("/ns/{namespace}/{label:}", False, "the label key is empty"),
        ("/ns/{namespace}/{label:-bad}", False, "is not a valid label name"),
        ("/ns/{namespace}/{label:Bad_Prefix/x}", False, "is not a DNS subdomain"),
        ("/ns/{n\u0430mespace}/x", False, "U+0430"),
        ("/ns/{namespace}/p\u0430yments", False, "look-alike Unicode"),
        ("/ns/{namespace}/\u2024\u2024/x", False, "U+2024"),
        ("/ns/{namespace}/a\x00b", False, "U+0000"),
        (
            "/ns/{namespace}/" + "a" * 10_000,
            False,
            "template is 10016 characters long; the limit is 512",
        ),
        ("/ns/{namespace}" + "/{name}" * 16, False, "more than 16 variables"),
    ],
)
def test_hostile_templates_rejected(template: str, shared: bool, fragment: str) -> None:
    with pytest.raises(TemplateError) as err:
        validate_template(template, shared)
    assert fragment in str(err.value)
    assert str(err.value).startswith("spec.spiffeID: ")
    with pytest.raises(TemplateError):
        render_spiffe_path(template, shared_ctx() if shared else pod_ctx())


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ({"team": "a/b"}, "contains '/', which could climb out of the /ns/<namespace>/ prefix"),
        ({"team": ".."}, "contains a dot segment"),
        ({"team": "x..y"}, "contains a dot segment"),
        ({"team": "."}, "contains a dot segment"),
        ({"team": ""}, "is empty"),
        ({"team": "caf\u00e9"}, "U+00E9"),
        ({"team": "a b"}, "U+0020"),
        ({}, "pod payments/payments-7d9f-abcde has no label 'team'; add the label"),
    ],
)
def test_label_values_cannot_escape(labels: dict[str, str], fragment: str) -> None:
    with pytest.raises(TemplateError) as err:
        render_spiffe_path("/ns/{namespace}/team/{label:team}", pod_ctx(pod_labels=labels))
    assert fragment in str(err.value)


def test_context_namespace_with_slash_rejected() -> None:
    with pytest.raises(TemplateError, match="contains '/'"):
        render_spiffe_path("/ns/{namespace}/x", pod_ctx(namespace="a/../b"))


def test_validate_template_accepts_defaults() -> None:
    validate_template("/ns/{namespace}/sa/{serviceAccount}", shared=True)
    validate_template("/ns/{namespace}/pod/{pod.name}/{label:app}", shared=False)


# --------------------------------------------------------------------------- DNS names


def test_render_dns_names_dedupes_and_lowercases() -> None:
    names = render_dns_names(
        [
            "{pod.name}.{namespace}.pod",
            "payments.{namespace}.svc",
            "PAYMENTS.{namespace}.svc",
            "{label:app}.{namespace}.svc",
        ],
        pod_ctx(),
    )
    assert names == ["payments-7d9f-abcde.payments.pod", "payments.payments.svc"]


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("*.{namespace}.svc", "is a wildcard; wildcards are not allowed"),
        ("{namespace}..svc", "invalid label ''"),
        ("-x.{namespace}", "invalid label '-x'"),
        ("x.{namespace}.", "remove the trailing dot"),
        ("10.0.0.1", "is an IP address"),
        ("caf\u00e9.{namespace}", "U+00E9"),
        ("a" * 64 + ".svc", "invalid label"),
        ("{label:team}.svc", "contains '_'"),
    ],
)
def test_invalid_dns_names(template: str, fragment: str) -> None:
    ctx = pod_ctx(pod_labels={"team": "a_b"})
    with pytest.raises(TemplateError) as err:
        render_dns_names(["ok.svc", template], ctx)
    message = str(err.value)
    if "contains '_'" in fragment:
        assert "invalid label 'a_b'" in message
    else:
        assert fragment in message
    assert message.startswith("spec.dnsNames[1]: ")


def test_dns_name_count_is_capped() -> None:
    with pytest.raises(TemplateError, match="101 DNS names requested; the limit is 100"):
        render_dns_names([f"n{i}.svc" for i in range(101)], pod_ctx())


def test_dns_pod_variables_rejected_for_shared() -> None:
    with pytest.raises(TemplateError, match="needs a pod"):
        render_dns_names(["{pod.name}.svc"], shared_ctx())
    with pytest.raises(TemplateError, match="needs a pod"):
        validate_dns_template("{pod.name}.svc", shared=True)


def test_validate_dns_name() -> None:
    assert validate_dns_name("Api.Example.COM") == "api.example.com"
    assert validate_dns_name("a" * 63 + ".b") == "a" * 63 + ".b"
    with pytest.raises(InvalidDNSNameError, match="the limit is 253"):
        validate_dns_name(".".join(["a" * 60] * 5))
    with pytest.raises(InvalidDNSNameError, match="wildcards are not allowed"):
        validate_dns_dns = validate_dns_name("*.example.com")  # noqa: F841


# --------------------------------------------------------------------------- properties

_label_values = st.text(string.ascii_letters + string.digits + "._-/", min_size=0, max_size=12)
_known_vars = [
    "{namespace}",
    "{name}",
    "{serviceAccount}",
    "{pod.name}",
    "{pod.uid}",
    "{trustDomain}",
    "{label:app}",
]
_template_pieces = st.lists(
    st.one_of(
        st.sampled_from(_known_vars),
        st.sampled_from(["/", "..", ".", "-", "x", "/ns/", "ns", "{", "}", "{bogus}"]),
        st.text(string.ascii_letters + "/.", max_size=6),
    ),
    max_size=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=_template_pieces,
    prefix=st.booleans(),
    namespace=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    label=_label_values,
    pod_name=_label_values,
    shared=st.booleans(),
)
def test_rendered_path_never_escapes_namespace(
    pieces: list[str], prefix: bool, namespace: str, label: str, pod_name: str, shared: bool
) -> None:
    template = ("/ns/{namespace}/" if prefix else "") + "".join(pieces)
    ctx = (
        TemplateContext(namespace, "wid", "sa", TD)
        if shared
        else TemplateContext(namespace, "wid", "sa", TD, pod_name or None, "uid", {"app": label})
    )
    try:
        path = render_spiffe_path(template, ctx)
    except PKIError as exc:
        assert isinstance(exc, TemplateError)
        return
    assert path.startswith(f"/ns/{namespace}/")
    segments = path.split("/")[1:]
    assert all(s not in {"", ".", ".."} for s in segments)
    assert segments[:2] == ["ns", namespace]
    SpiffeID(TD, path)  # always a valid SPIFFE ID


@settings(max_examples=100, deadline=None)
@given(st.text(string.ascii_letters + "._:", min_size=1, max_size=20))
def test_unknown_variables_always_rejected(name: str) -> None:
    known = {"namespace", "name", "serviceAccount", "pod.name", "pod.uid", "trustDomain"}
    assume(name not in known and not name.startswith("label:"))
    with pytest.raises(TemplateError, match="unknown variable"):
        validate_template("/ns/{namespace}/{" + name + "}", shared=False)


def test_template_length_limit_constant() -> None:
    assert MAX_TEMPLATE_LENGTH == 512
    validate_template("/ns/{namespace}/" + "a" * (512 - 16), shared=True)


def test_parsed_templates_are_reused_but_errors_are_raised_every_time() -> None:
    template = "/ns/{namespace}/pod/{pod.name}"
    first = render_spiffe_path(template, pod_ctx(pod_name="web-1"))
    second = render_spiffe_path(template, pod_ctx(pod_name="web-2"))
    assert (first, second) == ("/ns/payments/pod/web-1", "/ns/payments/pod/web-2")
    messages = []
    for _ in range(2):
        with pytest.raises(TemplateError) as err:
            render_spiffe_path("/ns/{namespace}/{nmae}", pod_ctx())
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "unknown variable {nmae}" in messages[0]
    # The same DNS template at another index is reported under that index.
    with pytest.raises(
        TemplateError, match=r"spec.dnsNames\[1\]: variable \{pod.name\} needs a pod"
    ):
        render_dns_names(["{name}.svc", "{pod.name}.svc"], shared_ctx())
    # Something that is not a string gets the template error, not a hashing TypeError.
    with pytest.raises(TemplateError, match="expected a template string, got list"):
        render_spiffe_path(["/ns/{namespace}/x"], pod_ctx())  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match=r"spec.dnsNames\[0\]: expected a template string"):
        render_dns_names([{"x": 1}], pod_ctx())  # type: ignore[list-item]
    with pytest.raises(TemplateError, match="trust domain: expected a string, got int"):
        render_spiffe_path("/ns/{namespace}/x", pod_ctx(trust_domain=7))
