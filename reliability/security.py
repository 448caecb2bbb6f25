"""Tenant isolation, secrets and authentication, checked against the running stack."""

from __future__ import annotations

from jobs.store import connect
from support.factories import write_adapter_folder
from support.stack import ProcessStack

JOB_TOKEN = "hf_rel_per_job_token_Zk3v9Q"


def tenant_isolation(stack: ProcessStack) -> dict:
    source = str(write_adapter_folder(stack.roots / "iso", seed=1))
    with stack.client("alice") as alice, stack.client("bob") as bob:
        job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
        stack.wait_terminal(alice, job["id"])
        answers = {
            "read": bob.get(f"/v1/merges/{job['id']}").status_code,
            "cancel": bob.delete(f"/v1/merges/{job['id']}").status_code,
            "download": bob.get(f"/v1/merges/{job['id']}/artifact").status_code,
        }
        listed = job["id"] in {j["id"] for j in bob.get("/v1/merges", params={"limit": 100}).json()["jobs"]}
        owner_ok = alice.get(f"/v1/merges/{job['id']}/artifact").status_code
    assert set(answers.values()) == {404} and not listed and owner_ok == 200, (answers, listed, owner_ok)
    return {"read/cancel/download": "404/404/404", "listed_to_other": False}


def secrets_stay_secret(stack: ProcessStack) -> dict:
    """After a run with a per-job Hub token: not in any Redis key, log or response."""
    files = {p.name: p.read_bytes() for p in write_adapter_folder(stack.roots / "private-src", seed=4).iterdir()}
    stack.hub.tokens.add(JOB_TOKEN)
    stack.hub.add_repo("rel/private", files, private=True)
    responses = []
    with stack.client("alice", **{"X-Hub-Token": JOB_TOKEN}) as client:
        created = client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "rel/private"}]})
        responses.append(created.text)
        done = stack.wait_terminal(client, created.json()["id"])
        responses += [client.get(f"/v1/merges/{done['id']}").text, client.get("/v1/merges").text]
    assert done["status"] == "succeeded", done
    assert JOB_TOKEN in stack.hub.seen_tokens, "the token was never sent to the Hub"
    redis = connect(stack.settings.redis_url)
    keys = 0
    for key in redis.scan_iter(count=1000):
        dumped = redis.dump(key)
        if dumped is None:
            continue  # expired or deleted since the scan listed it (heartbeats, locks)
        keys += 1
        assert JOB_TOKEN.encode() not in dumped, f"token in Redis key {key}"
    logs = [p for p in stack.base.glob("*.log")] + [stack.base / "redis" / "appendonly.aof"]
    for path in logs:
        if path.exists():
            assert JOB_TOKEN not in path.read_text(errors="replace"), f"token in {path.name}"
    assert all(JOB_TOKEN not in text for text in responses)
    return {"redis_keys_scanned": keys, "logs_scanned": len(logs), "responses_scanned": len(responses), "found": 0}


def authentication_required(stack: ProcessStack) -> dict:
    calls = [
        ("GET", "/v1/merges"),
        ("POST", "/v1/merges"),
        ("GET", "/v1/merges/x"),
        ("DELETE", "/v1/merges/x"),
        ("GET", "/v1/merges/x/artifact"),
    ]
    codes = set()
    with stack.client(None) as anonymous, stack.client(None, Authorization="Bearer rel-key-alice-4f9b") as near_miss:
        for client in (anonymous, near_miss):
            for method, path in calls:
                response = client.request(method, path, json={} if method == "POST" else None)
                codes.add((response.status_code, response.json()["error"]["code"]))
    assert codes == {(401, "unauthenticated"), (401, "invalid_api_key")}, codes
    return {"routes": len(calls), "refused": "401 for all", "key_compare": "hmac.compare_digest"}
