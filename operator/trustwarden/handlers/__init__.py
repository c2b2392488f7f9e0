"""trustwarden.handlers"""
