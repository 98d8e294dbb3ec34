"""A fleet operator's webhook receiver: verifies Standard Webhooks signatures, dedupes by id.

    WEBHOOK_SECRET=whsec_... python examples/fleet_webhook_receiver.py --port 9100

Every request is verified with the ``standardwebhooks`` library (signature and a
5-minute timestamp tolerance); a ``webhook-id`` seen before is acknowledged and
not processed again (the broker delivers at least once). During a secret
rotation set ``WEBHOOK_SECRET`` to the new secret: the broker signs with both.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import OrderedDict

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

SEEN_MAX = 100_000


def make_app(secret: str) -> web.Application:
    hook = Webhook(secret)
    seen: OrderedDict[str, None] = OrderedDict()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            message = hook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        webhook_id = request.headers["webhook-id"]
        if webhook_id in seen:
            return web.Response(status=204)  # a redelivery: already handled
        seen[webhook_id] = None
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        print(json.dumps({"id": webhook_id, "type": message["type"], "data": message["data"]}))
        return web.Response(status=204)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/webhooks", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
