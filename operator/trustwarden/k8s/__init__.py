"""trustwarden.k8s"""
