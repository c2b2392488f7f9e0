"""trustwarden.reconcile"""
