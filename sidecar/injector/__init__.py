"""The sidecar injector: a mutating admission webhook that adds the routing sidecar
to pods that opt in (``hitl injector serve``), and the same mutation offline
(``hitl injector render``).

    annotations.py   what a pod asks for: its opt-in label and ``hitl.dev/*`` annotations,
                     read and validated into PodSettings (pure)
    quantity.py      Kubernetes resource quantities, checked and converted (pure)
    container.py     the sidecar container and the volumes it needs (pure)
    patch.py         a pod in, a JSONPatch out; idempotent (pure)
    admission.py     AdmissionReview v1 in, AdmissionReview v1 out (pure)
    config.py        the injector's settings, from the environment and flags
    tls.py           the serving certificate, reloaded when its files change
    server.py        HTTPS: POST /mutate, GET /healthz and /readyz
    metrics.py       admissions by result, and their duration
    app.py           assemble and run the webhook until SIGTERM
    cli.py           ``hitl injector serve|render``
"""
