"""Ceiling: a raw ASGI app reading the body and returning fixed JSON."""

BODY = b'{"prediction":"positive","confidence":0.9,"probabilities":{"positive":0.9}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
