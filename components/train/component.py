from kfp.dsl import Artifact, Dataset, Input, Output


def train_group(
    config_json: str,
    run_id: str,
    message: Input[Artifact],
    shards: Input[Dataset],
    group: int,
    site: str,
    updates: Output[Artifact],
):
    """Train one group of the round's clients, one after another, in this pod (with
    LotteryFL's personal masks, each client's own mask comes from the clients' state in the
    run's store). With data kept at sites (`site` set) the group is that site's client, if
    the round sampled it, trained on the site's own folder only."""
    import json

    from fedprune import steps
    from fedprune.config import parse_config
    from fedprune.engine.round import client_starts
    from fedprune.io.exchange import pod_runtime, read_broadcast, write_updates
    from fedprune.io.publish import run_store
    from fedprune.io.state import ClientState
    from fedprune.tracking.runs import end_on_signals

    cfg = parse_config(json.loads(config_json))
    end_on_signals(cfg, run_id)  # SIGTERM: the MLflow run is marked KILLED
    plan = read_broadcast(message.path)
    if site:
        rt = pod_runtime(cfg, shards.path, site=site)
        clients = [c for c in plan.clients if c == sorted(cfg.kubeflow.sites).index(site)]
    else:
        rt = pod_runtime(cfg, shards.path)
        clients = plan.group(group, cfg.kubeflow.clients_per_pod)
    state = (
        ClientState.after(run_store(cfg, run_id), plan.round - 1) if rt.method.personal else None
    )
    personal = client_starts(rt, state, plan, clients=clients) if state else {}
    write_updates(
        updates.path,
        steps.train_clients(rt, plan.payload, clients, round_=plan.model_round, personal=personal),
    )
