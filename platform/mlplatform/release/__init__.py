"""Release: what serves, and how that changes — deploy, traffic, promote, rollback, rollout, their history.

Modules, from the bottom: `serve_api` (Ray Serve's REST API), `history` (every change, in MLflow),
`traffic` (`TrafficControl`, the one path every change takes), `deploy` (a Serve config file), `rollout`
(a progressive rollout judged on live metrics), `app` (the serving application wired to this control plane,
the `import_path` of our Serve configs), `config` (deploy and rollout configs).

Nothing is imported here, so that `mlplatform traffic show` does not load Ray Serve to read a policy.
"""
