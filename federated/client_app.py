"""FLEEG ClientApp: one site (from its node config), local state kept at the site (see
bcikit.federated.flower.make_client_app)."""

from bcikit.federated.flower import make_client_app

app = make_client_app()
