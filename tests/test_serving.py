"""The recommendation service: contract, bad input, metrics, and durability across a hard kill."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.localserver import free_port, wait_until_up
from pipeline.serving.app import create_app

from helpers import CONTEXT


@pytest.fixture
def client(run_dir, tmp_path):
    with TestClient(create_app(run_dir, "LinUCB", tmp_path / "store.sqlite", batch_size=4)) as test_client:
        yield test_client


def test_recommendations_equal_the_pipeline_policy_object(client, run_dir):
    served = client.post("/recommend", json={"context": CONTEXT, "k": 5}).json()
    recommender = joblib.load(run_dir / "artifacts/seed_42/fold_0/LinUCB/recommender.joblib")
    featurizer = joblib.load(run_dir / "artifacts/seed_42/fold_0/context_featurizer.joblib")
    items, scores = recommender.recommend(featurizer.transform(pd.DataFrame([CONTEXT])), return_scores=True)
    assert [row["item_id"] for row in served["items"]] == list(items)
    np.testing.assert_allclose([row["score"] for row in served["items"]], scores)
    assert {"name", "category", "price"} <= set(served["items"][0])
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 25 and health["policy"] == "LinUCB"


def test_openapi_contract_lists_every_endpoint_and_field(client):
    schema = client.get("/openapi.json").json()
    assert {"/health", "/recommend", "/feedback", "/metrics"} <= set(schema["paths"])
    codes = {path: set(schema["paths"][path][method]["responses"])
             for path, method in (("/recommend", "post"), ("/feedback", "post"), ("/health", "get"))}
    assert codes == {"/recommend": {"200", "413", "422"}, "/feedback": {"200", "404", "409", "413", "422"},
                     "/health": {"200"}}
    recommended = schema["components"]["schemas"]["RecommendResponse"]["properties"]
    assert {"request_id", "items", "warnings"} <= set(recommended)
    answer = client.post("/recommend", json={"context": CONTEXT}).json()
    assert set(answer) == set(recommended)  # the declared schema is what is served
    context = schema["components"]["schemas"]["Context"]
    assert set(context["required"]) == set(CONTEXT) and context["additionalProperties"] is False
    request = schema["components"]["schemas"]["RecommendRequest"]["properties"]["k"]
    assert request["anyOf"][0]["maximum"] == 25 and request["anyOf"][0]["minimum"] == 1


@pytest.mark.parametrize("body, status, field", [
    ({"context": {**CONTEXT, "colour": "red"}}, 422, "colour"),
    ({"context": {k: v for k, v in CONTEXT.items() if k != "age"}}, 422, "age"),
    ({"context": {**CONTEXT, "age": "old"}}, 422, "age"),
    ({"context": CONTEXT, "k": 0}, 422, "k"),
    ({"context": CONTEXT, "k": 26}, 422, "k"),
])
def test_bad_recommend_requests_name_the_field(client, body, status, field):
    response = client.post("/recommend", json=body)
    assert response.status_code == status
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
    assert client.get("/health").status_code == 200  # still serving


def test_feedback_errors_and_oversized_bodies(client):
    answer = client.post("/recommend", json={"context": CONTEXT}).json()
    request_id, shown = answer["request_id"], [item["item_id"] for item in answer["items"]]
    other = next(item for item in range(1, 26) if item not in shown)
    assert client.post("/feedback", json={"request_id": request_id, "item_id": 999, "reward": 1}).status_code == 404
    assert client.post("/feedback", json={"request_id": "nope", "item_id": shown[0], "reward": 1}).status_code == 404
    assert client.post("/feedback", json={"request_id": request_id, "item_id": shown[0], "reward": 2}).status_code == 422
    both = {"request_id": request_id, "context": CONTEXT, "item_id": shown[0], "reward": 1}
    assert client.post("/feedback", json=both).status_code == 422
    big = client.post("/recommend", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413
    # feedback naming a request: only for an item that request returned, and once
    not_shown = client.post("/feedback", json={"request_id": request_id, "item_id": other, "reward": 1})
    assert not_shown.status_code == 422 and "not in the list returned" in not_shown.json()["detail"]
    first = client.post("/feedback", json={"request_id": request_id, "item_id": shown[0], "reward": 1})
    assert first.json()["acknowledged"]
    again = client.post("/feedback", json={"request_id": request_id, "item_id": shown[0], "reward": 1})
    assert again.status_code == 409
    assert client.post("/feedback", json={"request_id": request_id, "item_id": shown[1], "reward": 0}).status_code == 200
    assert client.get("/health").json()["events_learnt_since_start"] + len(
        client.app.state.service.pending) == 2  # the refused ones were not learnt


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused_without_being_echoed(client, raw):
    body = json.dumps({"context": {**CONTEXT, "age": 0}}).replace('"age": 0', '"age": ' + raw.decode())
    response = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any("age" in error["loc"] for error in detail) and "input" not in json.dumps(detail)


def test_streamed_bodies_are_held_to_the_size_limit(client):
    def chunks():  # no Content-Length: the body arrives in pieces
        yield b'{"context": {"device": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}}'

    response = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/health").status_code == 200


def test_errors_never_echo_more_than_an_excerpt(client):
    huge = "y" * 50_000
    for path, body in (("/feedback", {"request_id": huge, "item_id": 1, "reward": 1}),
                       ("/feedback", {"context": CONTEXT, "item_id": huge, "reward": 1}),
                       ("/recommend", {"context": {**CONTEXT, huge: 1}}),
                       ("/recommend", {"context": {**CONTEXT, "gender": {"nested": huge}}})):
        response = client.post(path, json=body)
        assert response.status_code in (404, 422), path
        assert len(response.content) < 2_000, (path, len(response.content))


def test_metrics_are_labelled_by_route_never_by_a_raw_path(client):
    for index in range(300):
        client.get(f'/nothing-{index}"}} fake_metric{{x="1"}} 1')
    client.get("/health")
    metrics = client.get("/metrics").text
    assert "fake_metric" not in metrics and "nothing" not in metrics
    assert 'bandit_requests_total{endpoint="unmatched",status="404"} 300' in metrics
    assert 'endpoint="/health"' in metrics and len(metrics) < 5_000


def test_feedback_is_learnt_in_batches_and_counted(client):
    answer = client.post("/recommend", json={"context": CONTEXT, "k": 4}).json()
    for row, reward in zip(answer["items"], (1, 0, 1, 1)):
        client.post("/feedback", json={"request_id": answer["request_id"], "item_id": row["item_id"], "reward": reward})
    assert client.get("/health").json()["events_learnt_since_start"] == 4
    metrics = client.get("/metrics").text
    assert "bandit_clicks_total 3" in metrics and "bandit_feedback_total 4" in metrics
    assert 'bandit_requests_total{endpoint="/feedback",status="200"} 4' in metrics
    assert 'bandit_request_latency_seconds{endpoint="/feedback",quantile="0.99"}' in metrics


def test_feedback_needs_a_request_this_process_issued(client):
    """Feedback on an invented context, or an invented request id, is refused (it used to be learnt)."""
    invented = client.post("/feedback", json={"context": CONTEXT, "item_id": 3, "reward": 1})
    assert invented.status_code == 422 and any(
        "request_id" in error["loc"] for error in invented.json()["detail"])
    unknown = client.post("/feedback", json={"request_id": "0" * 32, "item_id": 3, "reward": 1})
    assert unknown.status_code == 404 and "not issued by this process" in unknown.json()["detail"]
    assert client.get("/health").json()["events_learnt_since_start"] == 0


def _start(run_dir, store, port):
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", str(run_dir), "--policy", "LinUCB",
                               "--port", str(port), "--store", str(store), "--batch-size", "7",
                               "--snapshot-every", "20"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = wait_until_up(f"http://127.0.0.1:{port}/health")
    if body is None:
        server.kill()
        pytest.fail("the service did not start within 60 s")
    return server, json.loads(body)


def _post(port, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


@pytest.mark.parametrize("senders", [1, 8])
def test_killed_mid_stream_restarts_with_every_acknowledged_event(run_dir, tmp_path, senders):
    """Laptop mode, sequential and concurrent feedback (8 clients at once): after a kill -9 and a restart the
    model has learnt every acknowledged event exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    store, port = tmp_path / "durable.sqlite", free_port()
    rng = np.random.default_rng(0)
    server, _ = _start(run_dir, store, port)
    events = []
    try:
        for step in range(60):  # batches of 7: 56 learnt, snapshots after 21 and 42, 4 pending at the kill
            context = {**CONTEXT, "age": int(rng.integers(18, 80)), "device": ["mobile", "desktop"][step % 2]}
            answer = _post(port, "/recommend", {"context": context, "k": 25})
            item = answer["items"][int(rng.integers(0, 25))]["item_id"]
            events.append({"request_id": answer["request_id"], "item_id": item, "reward": int(rng.random() < 0.3),
                           "context": context})
        with ThreadPoolExecutor(senders) as clients:
            ids = list(clients.map(lambda event: _post(port, "/feedback", {
                key: event[key] for key in ("request_id", "item_id", "reward")})["feedback_id"], events))
        acknowledged = sorted(zip(ids, events), key=lambda pair: pair[0])  # the service learns in id order
        assert [feedback_id for feedback_id, _ in acknowledged] == list(range(1, 61))
    finally:
        os.kill(server.pid, signal.SIGKILL)  # no shutdown hook: whatever was not snapshotted must be replayed
        server.wait(timeout=10)
    server, health = _start(run_dir, store, port)
    try:
        assert health["last_learnt_feedback_id"] == acknowledged[-1][0] == 60
        assert health["replayed_at_start"] == 60 - 42  # the log after the newest snapshot
        served = _post(port, "/recommend", {"context": CONTEXT, "k": 25})
    finally:
        server.terminate()
        server.wait(timeout=10)
    # The same model built here from the run's policy and every acknowledged event, in order.
    recommender = joblib.load(run_dir / "artifacts/seed_42/fold_0/LinUCB/recommender.joblib")
    featurizer = joblib.load(run_dir / "artifacts/seed_42/fold_0/context_featurizer.joblib")
    contexts = featurizer.transform(pd.DataFrame([event["context"] for _, event in acknowledged]))
    recommender.partial_fit([event["item_id"] for _, event in acknowledged],
                            [event["reward"] for _, event in acknowledged], contexts)
    recommender.top_k = 25
    items, scores = recommender.recommend(featurizer.transform(pd.DataFrame([CONTEXT])), return_scores=True)
    assert [row["item_id"] for row in served["items"]] == list(items)
    np.testing.assert_allclose([row["score"] for row in served["items"]], scores, rtol=1e-9)


def test_fast_featurizer_equals_scikit_learn_with_rare_and_unknown_values():
    from pipeline.features import TabularFeaturizer

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice([f"c{i}" for i in range(80)], 2000, p=np.r_[[0.5], [0.5 / 79] * 79]),
                          "tier": rng.choice(["a", "b"], 2000), "age": rng.normal(40, 10, 2000),
                          "flag": rng.random(2000) < 0.5})
    featurizer = TabularFeaturizer(["city", "tier"], ["age", "flag"]).fit(frame)
    assert any("infrequent" in name for name in featurizer.feature_names_)
    records = frame.head(300).to_dict(orient="records") + [{"city": "nowhere", "tier": "z", "age": 1.0, "flag": True}]
    np.testing.assert_array_equal(featurizer.transform_records(records), featurizer.transform(pd.DataFrame(records)))


def test_fast_linucb_scores_equal_mabwiser_and_carry_the_bonus(client, run_dir):
    from pipeline.scoring import LinearScorer

    recommender = joblib.load(run_dir / "artifacts/seed_42/fold_0/LinUCB/recommender.joblib")
    featurizer = joblib.load(run_dir / "artifacts/seed_42/fold_0/context_featurizer.joblib")
    contexts = featurizer.transform(pd.DataFrame([CONTEXT, {**CONTEXT, "age": 70, "device": "tablet"}]))
    scorer = LinearScorer.from_recommender(recommender)
    expected = recommender.mab.predict_expectations(contexts)
    np.testing.assert_allclose(scorer.scores(contexts), [[row[arm] for arm in scorer.arms] for row in expected],
                               rtol=1e-12)
    served = client.post("/recommend", json={"context": CONTEXT, "k": 3}).json()["items"]
    assert all(row["exploration_bonus"] > 0 for row in served)
    popularity = joblib.load(run_dir / "artifacts/seed_42/fold_0/Popularity/recommender.joblib")
    assert LinearScorer.from_recommender(popularity) is None  # sampling policies keep MABWiser's own path


def _example(prop: dict):
    """A valid value for an OpenAPI property of the Context schema."""
    types = [option.get("type") for option in prop.get("anyOf", [prop])]
    return "mobile" if "string" in types else 1.0 if "number" in types else True


def test_contract_requests_built_from_the_openapi_schema(client):
    """Bodies generated from the served schema are accepted; each field broken in turn is rejected by name."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    context = {name: _example(prop) for name, prop in schema["Context"]["properties"].items()}
    response = client.post("/recommend", json={"context": context, "k": 4})
    assert response.status_code == 200 and len(response.json()["items"]) == 4
    for name, prop in schema["Context"]["properties"].items():
        broken = {**context, name: {"not": "a scalar"}}
        answer = client.post("/recommend", json={"context": broken})
        assert answer.status_code == 422, name
        assert name in {str(part) for error in answer.json()["detail"] for part in error["loc"]}
    feedback = schema["FeedbackRequest"]
    assert set(feedback["properties"]) == set(feedback["required"]) == {"request_id", "item_id", "reward"}
    item = response.json()["items"][0]["item_id"]
    accepted = client.post("/feedback", json={"request_id": response.json()["request_id"], "item_id": item,
                                              "reward": 0})
    assert accepted.status_code == 200 and accepted.json()["acknowledged"] is True


class _RecordingPolicy:
    """Stands in for ServedPolicy: its 'model' is the list of items learnt, in order."""

    def __init__(self):
        self.recommender, self.version = [], "v"

    def learn(self, contexts, items, rewards):
        self.recommender = self.recommender + list(items)

    def replace_model(self, recommender):
        self.recommender = recommender

    def learner(self):
        clone = _RecordingPolicy()
        clone.recommender = list(self.recommender)
        return clone

    def publish(self, recommender, version):
        self.recommender, self.version = recommender, version


def test_feedback_is_learnt_and_snapshotted_in_log_order_whatever_the_threads_do(tmp_path):
    """The race of concurrent /feedback calls, forced: id 1's append returns late, after id 2 was appended. The
    model must still learn 1 then 2, and a restart from its snapshot must hold each event exactly once."""
    import threading

    from pipeline.serving.inline import Service
    from pipeline.serving.store import SQLiteStore

    class SlowFirstAppend(SQLiteStore):
        def append(self, context, item, reward):
            feedback_id = super().append(context, item, reward)
            if feedback_id == 1:
                time.sleep(0.5)  # committed, but not yet queued for learning
            return feedback_id

    store = SlowFirstAppend(tmp_path / "log.sqlite")
    service = Service(_RecordingPolicy(), store, batch_size=1, snapshot_every=1)
    first = threading.Thread(target=service.add_feedback, args=({"x": 1}, "a", 1.0))
    second = threading.Thread(target=service.add_feedback, args=({"x": 2}, "b", 0.0))
    first.start()
    time.sleep(0.1)
    second.start()
    first.join()
    second.join()
    assert service.policy.recommender == ["a", "b"]
    restarted = Service(_RecordingPolicy(), SQLiteStore(tmp_path / "log.sqlite"), batch_size=1, snapshot_every=1)
    assert restarted.policy.recommender == ["a", "b"] and restarted.replayed == 0


def test_learning_never_blocks_recommend_and_each_learnt_batch_is_a_new_version(client):
    """A learning batch made to take 2 s: /recommend and /health answer meanwhile (they used to wait for it),
    and the model version moves on once the batch is published."""
    import threading

    service = client.app.state.service
    learner = service.learner.recommender
    original = learner.partial_fit

    def slow_partial_fit(*args, **kwargs):
        time.sleep(2.0)
        return original(*args, **kwargs)

    learner.partial_fit = slow_partial_fit
    before = client.get("/health").json()["model_version"]
    answer = client.post("/recommend", json={"context": CONTEXT, "k": 4}).json()
    items = [item["item_id"] for item in answer["items"]]
    posts = [threading.Thread(target=client.post, args=("/feedback",),
                              kwargs={"json": {"request_id": answer["request_id"], "item_id": item, "reward": 1}})
             for item in items]  # batch_size 4: the fourth starts the slow batch
    for post in posts:
        post.start()
    time.sleep(0.5)
    started = time.perf_counter()
    assert client.post("/recommend", json={"context": CONTEXT}).status_code == 200
    assert client.get("/health").status_code == 200
    waited = time.perf_counter() - started
    for post in posts:
        post.join()
    del learner.partial_fit  # the shutdown snapshot pickles the learner
    assert waited < 0.5, f"/recommend and /health waited {waited:.2f} s for learning"
    after = client.get("/health").json()
    assert after["events_learnt_since_start"] == 4 and after["model_version"] != before
    assert after["model_version"].endswith("@feedback-4")


def test_unseen_levels_and_values_far_outside_training_are_reported(client):
    usual = client.post("/recommend", json={"context": CONTEXT}).json()
    assert usual["warnings"] == []
    odd = client.post("/recommend", json={"context": {**CONTEXT, "age": 900, "device": "toaster"}}).json()
    assert len(odd["items"]) == 5  # still served
    assert any(w.startswith("age: 900") and "far outside the training range" in w for w in odd["warnings"])
    assert any(w.startswith("device: 'toaster'") and "never seen" in w for w in odd["warnings"])
