-- wrk script: POST one text per request to /api/predict.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "The staff were friendly and the room was spotless."}'
