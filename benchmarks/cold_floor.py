"""The floor of a cold start: the least code that does the same first kickout (read the secret, sign, one GET).

Run like `cold_function.py`, from the same artifact (its boto3 and urllib3), with the same environment.
"""

import time

STARTED = time.time()

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
from urllib.parse import quote  # noqa: E402

import boto3  # noqa: E402
import urllib3  # noqa: E402

IMPORTED = time.time()

event = json.loads(os.environ["BENCH_EVENT"])
app_id = os.environ["ZEGO_APP_ID"]
secret_string = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["ZEGO_SECRET_ID"])["SecretString"]
server_secret = json.loads(secret_string)["ServerSecret"]
nonce, timestamp = secrets.token_hex(8), int(time.time())
signature = hashlib.md5(f"{app_id}{nonce}{server_secret}{timestamp}".encode(), usedforsecurity=False).hexdigest()
pairs = [
    ("Action", "KickoutRoomUser"),
    ("AppId", app_id),
    ("SignatureNonce", nonce),
    ("Timestamp", str(timestamp)),
    ("SignatureVersion", "2.0"),
    ("Signature", signature),
    ("RoomId", event["room_id"]),
    *(("UserId[]", user) for user in dict.fromkeys(event["user_ids"])),
    ("CustomReason", event["reason"]),
    ("FromUserId", event["operator_id"]),
]
query = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in pairs)
reply = urllib3.request("GET", f"{os.environ['ZEGO_API_ENDPOINT']}?{query}")
DONE = time.time()
assert json.loads(reply.data)["Code"] == 0, reply.data
report = {
    "started": STARTED,
    "imported": IMPORTED,
    "done": DONE,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "modules": len(sys.modules),
    "origins": {"boto3": boto3.__file__},
}
sys.stdout.write(f"\nBENCH_RESULT {json.dumps(report)}\n")
sys.stdout.flush()
os._exit(0)
