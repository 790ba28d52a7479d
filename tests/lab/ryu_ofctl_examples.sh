#!/bin/sh
# The curl calls of Ryu's ofctl_rest documentation (OpenFlow 1.3), run against weft.
# Usage: ryu_ofctl_examples.sh API_SOCKET TOKEN DPID
# Prints one line per call: METHOD PATH STATUS BODY.  Differences from the documented
# JSON, where weft refuses the verbatim call: flow entries give "override": true (table 0
# is weft's pipeline, ports 1/2 may be tenants') and no timeouts (stored flows are
# permanent); the verbatim add is also sent, and answered 422.
set -u
SOCK=$1 TOKEN=$2 DPID=$3
call() {  # METHOD PATH [BODY]
    if [ $# -ge 3 ]; then
        out=$(curl -s --unix-socket "$SOCK" -H "Authorization: Bearer $TOKEN" -X "$1" \
              -d "$3" -w '\n%{http_code}' "http://localhost$2")
    else
        out=$(curl -s --unix-socket "$SOCK" -H "Authorization: Bearer $TOKEN" -X "$1" \
              -w '\n%{http_code}' "http://localhost$2")
    fi
    code=$(printf '%s' "$out" | tail -n 1)
    body=$(printf '%s' "$out" | sed '$d' | tr -d '\n')
    printf '%s %s %s %s\n' "$1" "$2" "$code" "$body"
}
call GET /stats/switches
call GET /stats/desc/$DPID
call GET /stats/flow/$DPID
call POST /stats/flow/$DPID '{"table_id": 0, "out_port": 2, "cookie": 1, "cookie_mask": 1, "match":{"in_port":1}}'
call GET /stats/aggregateflow/$DPID
call POST /stats/aggregateflow/$DPID '{"table_id": 0, "out_port": 2, "cookie": 1, "cookie_mask": 1, "match":{"in_port":1}}'
call GET /stats/table/$DPID
call GET /stats/port/$DPID
call GET /stats/port/$DPID/1
call GET /stats/portdesc/$DPID
call GET /stats/meterfeatures/$DPID
call GET /stats/meterconfig/$DPID
call GET /stats/meter/$DPID
call GET /stats/groupfeatures/$DPID
call GET /stats/groupdesc/$DPID
call GET /stats/group/$DPID
call POST /stats/flowentry/add "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"idle_timeout\": 30, \"hard_timeout\": 30, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[{\"type\":\"OUTPUT\", \"port\": 2}]}"
call POST /stats/flowentry/add "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[{\"type\":\"OUTPUT\", \"port\": 2}], \"override\": true}"
sleep 1
call POST /stats/flow/$DPID '{"priority": 11111}'
call POST /stats/flowentry/modify "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[{\"type\":\"OUTPUT\", \"port\": 3}], \"override\": true}"
call POST /stats/flowentry/modify_strict "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[{\"type\":\"OUTPUT\", \"port\": 2}], \"override\": true}"
call POST /stats/flowentry/delete_strict "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[]}"
call POST /stats/flowentry/add "{\"dpid\": $DPID, \"table_id\": 0, \"priority\": 11112, \"match\":{\"in_port\":1}, \"actions\":[], \"override\": true}"
call POST /stats/flowentry/delete "{\"dpid\": $DPID, \"cookie\": 1, \"cookie_mask\": 1, \"table_id\": 0, \"idle_timeout\": 30, \"hard_timeout\": 30, \"priority\": 11111, \"flags\": 1, \"match\":{\"in_port\":1}, \"actions\":[]}"
call POST /stats/flowentry/add "{\"dpid\": $DPID, \"table_id\": 100, \"priority\": 5, \"match\":{}, \"actions\":[]}"
sleep 1
call POST /stats/flow/$DPID '{"table_id": 100}'
call DELETE /stats/flowentry/clear/$DPID
sleep 1
call POST /stats/flow/$DPID '{"table_id": 100}'
