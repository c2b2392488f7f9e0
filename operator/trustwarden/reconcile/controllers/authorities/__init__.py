"""The CA lifecycle of each TrustDomain: selfSigned, secretRef and external authorities."""
