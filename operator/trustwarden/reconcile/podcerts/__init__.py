"""Native pod certificates (Kubernetes 1.37+): a PodCertificateRequest signer per TrustDomain
and a ClusterTrustBundle per TrustDomain. The engine only starts this controller and lends it
read access to its domains, identities and namespaces (see controller.EngineView)."""

from trustwarden.reconcile.podcerts.controller import PodCertificates

__all__ = ["PodCertificates"]
