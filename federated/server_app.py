"""FLEEG ServerApp: FedAvg over the shared tensors, failures named per site (see
bcikit.federated.flower.server_main)."""

from bcikit.federated.flower import make_server_app

app = make_server_app()
