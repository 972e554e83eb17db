"""What the controller creates for runtime pods, built as plain objects (pure: no I/O, no kopf).

- ``config``: the ``model-serving-config`` ConfigMap, read into ``ServingConfig``.
- ``objects``: the runtime Deployment and Service of a ServingRuntime.
- ``security``: what makes runtime pods safe to expose (auth tokens, TLS, the Secrets they read).
- ``plan``: which Deployments a namespace needs, as create / patch / delete steps.
"""
