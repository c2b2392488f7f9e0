"""trustwarden.pki"""
