"""The REST API (v1, and Ryu's ofctl_rest paths): one FastAPI router per resource.

    app            create_app: the routers, the error handling, the token; serve_in_thread
    deps           what handlers share through Depends: the core, the token check, the
                   writer gate (no writes while the OpenFlow loop is stuck), a known switch
    errors         the JSON error body, the documented statuses, the middleware and
                   exception handlers that produce them
    schemas        the request bodies (pydantic), bounds from controller.model
    tenants        /v1/tenants
    networks       /v1/networks, /v1/tenants/{name}/routes, /v1/hosts/{host}/gateways
    ports          /v1/ports: port bindings
    backup         /v1/export, /v1/import
    acls           /v1/tenants/{name}/acls, and the per-rule counters
    operator_flows /v1/switches/{key}/flows (operator flows)
    ofctl_rest     Ryu's /stats/... paths
    hosts          /v1/hosts: members, registration, attachments
    switches       /v1/switches and their live flows
    qos            /v1/qos: rate limits, QoS rules, meter stats
    observe        /v1/health, /metrics
    trace          /v1/trace: a packet's path on the switches' own flows (ofproto/trace)
    topology       /v1/topology (the live picture's data), /ui (the page that draws it)
"""
