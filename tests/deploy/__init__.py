"""Deployment artefacts, checked offline: Dockerfile, k8s/ (kustomize), the Grafana dashboard.

Nothing here talks to a container engine or a cluster. ``kubectl kustomize`` renders every
kustomization under ``k8s/`` (kubectl is required: see :mod:`tests.deploy.kube`), the objects are
validated against Kubernetes' OpenAPI schemas (PyPI ``kubernetes-validate``, offline) and
custom resources against the trimmed schemas in ``schemas/``, and the wiring between objects and
the programs' real flags is checked. The dashboard's queries are parsed as PromQL (PyPI
``promql-parser``) and must name real metrics.
"""
