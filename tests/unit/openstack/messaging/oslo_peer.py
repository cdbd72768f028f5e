#!/usr/bin/python3
"""Debian's own oslo.messaging (the library nova's services speak through) as kiln's peer in
kiln_messaging_live_tests: it calls kiln's RPC server, or serves one call from kiln's client.

  oslo_peer.py call URL EXCHANGE TOPIC SERVER METHOD ARGS_JSON
      prints {"result": ...} or {"error": CLASS, "message": ...}
  oslo_peer.py serve URL EXCHANGE TOPIC SERVER READY_FILE
      serves `echo` (returns its arguments and the caller's context) and `explode` (raises
      ValueError) on TOPIC/SERVER; touches READY_FILE once consuming; exits after one call or 30 s
"""
import json
import os
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging


def transport(url, exchange):
    messaging.set_transport_defaults(control_exchange=exchange)
    cfg.CONF([], project="kiln-oslo-peer")
    return messaging.get_rpc_transport(cfg.CONF, url=url)


def call(url, exchange, topic, server, method, args):
    target = messaging.Target(topic=topic, server=server or None, version="1.0")
    client = messaging.RPCClient(transport(url, exchange), target, timeout=20)
    context = {"request_id": "req-oslo-peer", "user_id": "oslo-peer", "is_admin": True}
    try:
        print(json.dumps({"result": client.call(context, method, **json.loads(args))}))
    except messaging.RemoteError as e:
        print(json.dumps({"error": e.exc_type, "message": e.value}))
    except messaging.MessagingTimeout as e:
        print(json.dumps({"error": "MessagingTimeout", "message": str(e)}))


def serve(url, exchange, topic, server, ready_file):
    done = threading.Event()

    class Endpoint:
        target = messaging.Target(version="1.0")

        def echo(self, ctxt, **kwargs):
            done.set()
            return {"args": kwargs, "user_id": ctxt.get("user_id"), "request_id": ctxt.get("request_id")}

        def explode(self, ctxt, **kwargs):
            done.set()
            raise ValueError("exploded as asked")

    rpc = messaging.get_rpc_server(transport(url, exchange), messaging.Target(topic=topic, server=server),
                                   [Endpoint()], executor="threading")
    rpc.start()
    with open(ready_file, "w") as f:
        f.write("ready\n")
    done.wait(30)
    time.sleep(0.5)  # the reply is sent after the endpoint returns
    rpc.stop()
    rpc.wait()


if __name__ == "__main__":
    if sys.argv[1] == "call":
        call(*sys.argv[2:8])
    elif sys.argv[1] == "serve":
        serve(*sys.argv[2:7])
    else:
        sys.exit("usage: oslo_peer.py call|serve ...")
