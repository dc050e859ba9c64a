#!/usr/bin/env python3
"""Writes the hand-made seeds of every target into corpus/<target>/seed-*.

Realistic inputs, as the stores, the control plane and the operator send
them: S3 and Azure XML error and list bodies, GCS JSON bodies, envelopes,
configs, plugin JSONs, dates. The rest of each corpus is what the fuzzer
found (minimised with `cargo fuzz cmin`). Run from fuzz/: ./seeds.py
"""
import hashlib
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r'^version = "(.*)"', open(os.path.join(HERE, "..", "Cargo.toml")).read(), re.M).group(1)
KEY = re.search(r'TEST_KEY_PKCS8: &str = "(.*?)";', open(os.path.join(HERE, "src", "key.rs")).read(), re.S).group(1)
KEY = KEY.replace("\\n\\\n", "\n").replace("\\n", "\n")
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DATE = "Date: Fri, 15 Jan 2027 08:00:05 GMT"


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def http(status, headers, body=""):
    head = "\n".join([str(status)] + headers)
    return head + "\n\n" + body


# --- gateway configs and envelopes -----------------------------------------
CONFIGS = {
    "echo": '{ "revision": "r1",\n  "routes": [ { "name": "echo", "paths": ["/echo"], "upstream": "echo_service" } ] }',
    "full": json.dumps({
        "revision": "2027-01-15.3",
        "routes": [
            {"name": "root", "paths": ["/"], "upstream": "default"},
            {"name": "api", "paths": ["/api/v1", "/api/v2"], "hosts": ["API.example.com", "*.example.org"],
             "methods": ["get", "POST"], "upstream": "api_backend"},
            {"name": "v6", "paths": ["/six"], "hosts": ["[::1]"], "upstream": "six"},
        ],
    }, indent=2),
    "path-match": json.dumps({
        "revision": "r2",
        "routes": [
            {"name": "echo", "paths": ["/echo"], "upstream": "echo_service"},
            {"name": "seg", "paths": ["/api"], "path_match": "segment", "upstream": "api"},
            {"name": "exact", "paths": ["/api/v1"], "path_match": "exact", "hosts": ["*.example.org"], "upstream": "v1"},
            {"name": "dup", "paths": ["/api"], "methods": ["GET"], "upstream": "dup"},
        ],
    }),
    "bad-path-match": '{"revision":"r1","routes":[{"name":"x","paths":["/"],"path_match":"regex","upstream":"u"}]}',
    "empty-routes": '{"revision":"r0","routes":[]}',
    "bad-path": '{"revision":"r1","routes":[{"name":"x","paths":["nope"],"upstream":"u"}]}',
    "unknown-field": '{"revision":"r1","routes":[],"extra":true}',
}
REQUESTS = "GET api.example.com:443 /api/v1/users?id=7\nPOST a.example.org /api/v2#frag\nGET [::1]:8080 /six\nDELETE x /\nGET  /echo/deep/er?q=1\n"
for name, cfg in CONFIGS.items():
    put("gateway", name, cfg + "\0" + REQUESTS)


def envelope(cfg, revision, term=4, version=VERSION, sha=None, exported_at="2027-01-15T08:00:00Z"):
    sha = sha or hashlib.sha256(cfg.encode()).hexdigest()
    return ('{"format":1,"version":"%s","revision":"%s","exported_at":"%s","exporter":"node-a","term":%d,'
            '"sha256":"%s","config":%s}' % (version, revision, exported_at, term, sha, cfg))


put("envelope", "echo", envelope(CONFIGS["echo"], "r1"))
put("envelope", "full", envelope(CONFIGS["full"], "2027-01-15.3", term=12, exported_at="2027-01-15T09:00:00.250+01:00"))
put("envelope", "no-term", envelope(CONFIGS["echo"], "r1").replace('"term":4,', ""))
put("envelope", "sha-upper", envelope(CONFIGS["echo"], "r1", sha=hashlib.sha256(CONFIGS["echo"].encode()).hexdigest().upper()))
put("envelope", "wrong-version", envelope(CONFIGS["echo"], "r1", version="0.0.9"))
put("envelope", "tampered", envelope(CONFIGS["echo"], "r1").replace("/echo", "/evil"))

# --- shared data ---------------------------------------------------------------
sha = hashlib.sha256(CONFIGS["echo"].encode()).hexdigest()
put("published", "record", "7 cp %s r1\n%s" % (sha, CONFIGS["echo"]))
put("published", "record-storage", "12 storage %s rev with spaces\n{}" % sha)
put("published", "generation", "42")
put("published", "driver", json.dumps({"owner": "root-7-00ff", "epoch": 3, "renewals": 9, "released": False,
                                        "node_id": "node-1", "generation": 12, "cp_answered": True,
                                        "import_attempts": 1, "import_in_flight": True}))
put("published", "status", json.dumps({"state": "serving", "source": "storage", "revision": "r7", "version": "0.0.9",
                                        "exported_at": "2027-01-15T08:00:00Z", "fresh_at_ms": 1800000000000,
                                        "leader": True, "term": 3}))
put("published", "status-waiting", '{"state":"import_failed","source":null,"revision":null,"version":null,'
                                   '"exported_at":null,"fresh_at_ms":null,"leader":false,"term":null}')

# --- election lease (an S3 GET answer) -------------------------------------------
lease = lambda holder, term, ttl=30000: json.dumps({"holder": holder, "term": term, "renewals": 5, "ttl_ms": ttl,
                                                    "renewed_at": "2027-01-15T08:00:00Z"})
put("election_lease", "fresh", http(200, ['ETag: "3f2a"', "Last-Modified: Fri, 15 Jan 2027 08:00:00 GMT", DATE,
                                          "Content-Type: application/json"], lease("node-b", 3)))
put("election_lease", "expired", http(200, ['ETag: "3f2b"', "Last-Modified: Fri, 15 Jan 2027 07:00:00 GMT", DATE],
                                      lease("node-b", 7)))
put("election_lease", "own", http(200, ['ETag: "3f2c"', DATE], lease("node-a", 2, 0)))
put("election_lease", "absent", http(404, ["Content-Type: application/xml"],
                                     '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                                     '<Message>The specified key does not exist.</Message>'
                                     '<Key>gw/0.1.0/election/lease.json</Key></Error>'))
put("election_lease", "garbage", http(200, ['ETag: "x"'], "not a lease"))
put("election_lease", "no-etag", http(200, [DATE], lease("node-b", 1)))

# --- plugin settings --------------------------------------------------------------
def plugin(url, **extra):
    d = {"cluster_fallback_config_import": True, "cluster_fallback_config_export": True,
         "cluster_fallback_config_storage": url}
    d.update(extra)
    return json.dumps(d, indent=2)


def env(**kv):
    return "".join("%s=%s\n" % kv_ for kv_ in kv.items())


SA = json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "abc", "private_key": KEY,
                 "client_email": "fuzz@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"})
put("settings", "s3-full",
    plugin("s3://my-bucket/some/prefix/", cluster_fallback_config_export_delay=3, node_id="dp-1",
           storage={"cluster": "s3", "endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "timeout_ms": 1000},
           control_plane={"cluster": "cp", "authority": "cp.internal", "path": "/v1/config", "timeout_ms": 2000,
                          "poll_interval_ms": 5000},
           election={"lease_ttl_ms": 30000, "renew_interval_ms": 10000},
           upstream_header="x-up", status_path="/fallback/status")
    + "\0" + env(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/CANARYbPxRfiCYEXAMPLEKEY",
                 AWS_SESSION_TOKEN="FwoGZXIvYXdzECANARYEaDK"))
put("settings", "s3-env", plugin("s3://b") + "\0" + env(AWS_DEFAULT_REGION="ap-south-1",
                                                         AWS_CONFIG_STORAGE_ENDPOINT="https://minio.internal:9000/base"))
put("settings", "gcs-sa", plugin("gs://bkt/gw", storage={"endpoint": "http://127.0.0.1:9023", "token_cluster": "oauth"})
    + "\0" + "GCP_SERVICE_ACCOUNT=" + SA + "\n")
put("settings", "gcs-anon", plugin("gcs://bkt"))
put("settings", "azure-key", plugin("azure://devstoreaccount1/configs/gw")
    + "\0" + env(AZURE_STORAGE_KEY=AZURITE_KEY, AZURE_STORAGE_ENDPOINT="http://127.0.0.1:10000/devstoreaccount1"))
put("settings", "azure-sas", plugin("azure://devstoreaccount1/configs")
    + "\0" + env(AZURE_STORAGE_SAS_TOKEN="sv=2021-12-02&ss=b&srt=co&sp=rwl&se=2030-01-01T00:00:00Z&sig=abCANARY%3D"))
put("settings", "azure-bad-key", plugin("azure://devstoreaccount1/configs")
    + "\0" + env(AZURE_STORAGE_KEY="not base64!! CANARY"))
put("settings", "import-policy", json.dumps({"cluster_fallback_config_import": True,
                                             "cluster_fallback_config_storage": "s3://b/p",
                                             "import": {"retry_initial_ms": 500, "retry_max_ms": 60000,
                                                        "max_attempts": 10, "older_versions": False,
                                                        "max_age_s": 86400}}))
put("settings", "snapshot-keys", plugin("s3://b/p", snapshot={"require_signature": True, "encrypt": True})
    + "\0" + env(AWS_ACCESS_KEY_ID="AK", AWS_SECRET_ACCESS_KEY="SK",
                 FALLBACK_CONFIG_SIGNING_KEY="fz-sign:ERERERERERERERERERERERERERERERERERERERERERE=",
                 FALLBACK_CONFIG_TRUSTED_KEYS="fz-sign:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=,old:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
                 FALLBACK_CONFIG_ENCRYPTION_KEYS="fz-enc:IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=,fz-old:CANARYIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI="))
put("settings", "snapshot-bad-keys", plugin("s3://b/p")
    + "\0" + env(AWS_ACCESS_KEY_ID="AK", AWS_SECRET_ACCESS_KEY="SK",
                 FALLBACK_CONFIG_SIGNING_KEY="k1:CANARYERERERERERERERERERERERERERERERERERERE",
                 FALLBACK_CONFIG_TRUSTED_KEYS="t1:AAAA,t1:BBBB"))
put("settings", "s3-sse", plugin("s3://b/p", cluster_fallback_export_s3_config={
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/fallback",
        "SSEKMSEncryptionContext": "eyJhcHAiOiJmYWxsYmFjay1jb25maWcifQ==", "BucketKeyEnabled": True,
        "StorageClass": "STANDARD_IA"})
    + "\0" + env(AWS_ACCESS_KEY_ID="AK", AWS_SECRET_ACCESS_KEY="SK"))
put("settings", "s3-sse-string", plugin("s3://b/p", cluster_fallback_export_s3_config='{"ServerSideEncryption":"AES256"}'))
put("settings", "gcs-cmek", plugin("gs://bkt/gw", storage={
        "kms_key_name": "projects/p/locations/eu/keyRings/gw/cryptoKeys/fallback"}))
put("settings", "azure-scope", plugin("azure://devstoreaccount1/configs/gw", storage={"encryption_scope": "fallback-scope"})
    + "\0" + env(AZURE_STORAGE_KEY=AZURITE_KEY))
put("settings", "empty", "")

# --- store answers ------------------------------------------------------------------
XML = '<?xml version="1.0" encoding="UTF-8"?>\n'
s3 = {
    "get-ok": http(200, ['ETag: "d41d8cd98f00b204e9800998ecf8427e"', "Last-Modified: Fri, 15 Jan 2027 07:59:00 GMT",
                         DATE, "Content-Type: application/json", "Content-Length: 2"], "{}"),
    "no-such-key": http(404, ["Content-Type: application/xml"], XML +
                        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
                        "<Key>gw/0.1.0/config.json</Key><RequestId>4442587FB7D0A2F9</RequestId>"
                        "<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>"),
    "access-denied": http(403, ["Content-Type: application/xml", "x-amz-request-id: 656c76696e67"], XML +
                          "<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
                          "<RequestId>656c76696e6727732072657175657374</RequestId></Error>"),
    "signature": http(403, [], XML + "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
                      "calculated does not match the signature you provided. Check your key and signing method."
                      "</Message><AWSAccessKeyId>AKIDEXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n"
                      "20270115T080000Z\n20270115/us-east-1/s3/aws4_request\nabc</StringToSign>"
                      "<CanonicalRequest>GET\n/gw/0.1.0/config.json\n\nhost:b\n\nhost\nUNSIGNED-PAYLOAD"
                      "</CanonicalRequest></Error>"),
    "precondition": http(412, [], XML + "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-"
                         "conditions you specified did not hold</Message><Condition>If-Match</Condition></Error>"),
    "slow-down": http(503, [], XML + "<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
                      "</Message></Error>"),
    "put-ok": http(200, ['ETag: "9b2cf535f27731c974343645a3985328"', DATE]),
    "list": http(200, ["Content-Type: application/xml"], XML +
                 '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>fuzz-bucket</Name>'
                 "<Prefix>gw/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>"
                 "<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
                 "</NextContinuationToken><CommonPrefixes><Prefix>gw/0.1.0/</Prefix></CommonPrefixes>"
                 "<CommonPrefixes><Prefix>gw/0.0.9-rc.1/</Prefix></CommonPrefixes>"
                 "<CommonPrefixes><Prefix>gw/a&amp;b /</Prefix></CommonPrefixes></ListBucketResult>"),
    "list-empty": http(200, [], XML + '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                       "<Name>fuzz-bucket</Name><Prefix>gw/</Prefix><KeyCount>0</KeyCount>"
                       "<IsTruncated>false</IsTruncated></ListBucketResult>"),
    "envoy-503": http(503, ["content-length: 91", "content-type: text/plain"],
                      "upstream connect error or disconnect/reset before headers. reset reason: connection failure"),
    "envoy-504": http(504, ["content-type: text/plain"], "upstream request timeout"),
    "reset": http(0, [], "reset: connection terminated"),
    "truncated": http(200, ['ETag: "a"', "Content-Length: 100"], "{}"),
}
for name, data in s3.items():
    put("s3_response", name, data)
    put("http", name, data)

az = {
    "get-ok": http(200, ['ETag: "0x8DB1E2A3B4C5D6E"', "Last-Modified: Fri, 15 Jan 2027 07:59:00 GMT", DATE,
                         "x-ms-blob-type: BlockBlob", "x-ms-version: 2021-12-02"], "{}"),
    "blob-not-found": http(404, ["x-ms-error-code: BlobNotFound", "Content-Type: application/xml"],
                           "\ufeff" + XML + "<Error><Code>BlobNotFound</Code><Message>The specified blob does not "
                           "exist.\nRequestId:3c9d8a5e-601e-0032-3f4b-2a8c6b000000\nTime:2027-01-15T08:00:05.1234567Z"
                           "</Message></Error>"),
    "auth-failed": http(403, ["x-ms-error-code: AuthenticationFailed"], "\ufeff" + XML +
                        "<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. "
                        "Make sure the value of Authorization header is formed correctly including the signature."
                        "\nRequestId:1\nTime:2027-01-15T08:00:05Z</Message><AuthenticationErrorDetail>The MAC "
                        "signature found in the HTTP request 'abc=' is not the same as any computed signature."
                        "</AuthenticationErrorDetail></Error>"),
    "exists": http(409, ["x-ms-error-code: BlobAlreadyExists"], "\ufeff" + XML +
                   "<Error><Code>BlobAlreadyExists</Code><Message>The specified blob already exists.</Message></Error>"),
    "condition": http(412, ["x-ms-error-code: ConditionNotMet"], "\ufeff" + XML +
                      "<Error><Code>ConditionNotMet</Code><Message>The condition specified using HTTP conditional "
                      "header(s) is not met.</Message></Error>"),
    "put-ok": http(201, ['ETag: "0x8DB1E2A3B4C5D6F"', DATE, "Content-MD5: sQqNsWTgdUEFt6mb5y4/5Q=="]),
    "head-404": http(404, ["x-ms-error-code: ContainerNotFound"]),
    "list": http(200, ["Content-Type: application/xml"], "\ufeff" + XML +
                 '<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1/" '
                 'ContainerName="configs"><Prefix>gw/</Prefix><Delimiter>/</Delimiter><Blobs>'
                 "<BlobPrefix><Name>gw/0.1.0/</Name></BlobPrefix><BlobPrefix><Name>gw/0.0.9/</Name></BlobPrefix>"
                 "<Blob><Name>gw/readme.txt</Name><Properties><Etag>0x1</Etag></Properties></Blob>"
                 "</Blobs><NextMarker>2!72!MDAwMDE0IWd3LzAuMC45LyEwMDAwMjghOTk5OS0xMi0zMVQyMzo1OTo1OS45OTk5OTk5Wi"
                 "E-</NextMarker></EnumerationResults>"),
    "list-last": http(200, [], XML + '<EnumerationResults ContainerName="configs"><Prefix>gw/</Prefix><Blobs/>'
                      "<NextMarker /></EnumerationResults>"),
    "envoy-503": s3["envoy-503"],
}
for name, data in az.items():
    put("azure_response", name, data)

err = lambda code, status, msg, reason: json.dumps({"error": {"code": code, "message": msg, "errors": [
    {"message": msg, "domain": "global", "reason": reason}], "status": status}})
gcs = {
    "get-ok": http(200, ["x-goog-generation: 1700000000000000", "x-goog-metageneration: 1", 'ETag: "CJDp0uTy/4IDEAE="',
                         "Last-Modified: Fri, 15 Jan 2027 07:59:00 GMT", DATE, "Content-Type: application/json"], "{}"),
    "not-found": http(404, ["Content-Type: application/json; charset=UTF-8"],
                      err(404, "NOT_FOUND", "No such object: fuzz-bucket/gw/0.1.0/config.json", "notFound")),
    "forbidden": http(403, [], err(403, "PERMISSION_DENIED", "fuzz@p.iam.gserviceaccount.com does not have "
                              "storage.objects.get access to the Google Cloud Storage object.", "forbidden")),
    "unauthorized": http(401, ["WWW-Authenticate: Bearer realm=\"https://accounts.google.com/\""],
                         err(401, "UNAUTHENTICATED", "Invalid Credentials", "authError")),
    "precondition": http(412, [], err(412, "FAILED_PRECONDITION", "At least one of the pre-conditions you specified "
                                  "did not hold.", "conditionNotMet")),
    "upload-ok": http(200, ["x-goog-generation: 1700000000000001"], json.dumps({
        "kind": "storage#object", "id": "fuzz-bucket/gw/0.1.0/config.json/1700000000000001",
        "name": "gw/0.1.0/config.json", "bucket": "fuzz-bucket", "generation": "1700000000000001",
        "metageneration": "1", "contentType": "application/json", "size": "2"})),
    "list": http(200, [], json.dumps({"kind": "storage#objects", "prefixes": ["gw/0.1.0/", "gw/0.0.9/", "gw/x/y/"],
                                      "nextPageToken": "CgtndzAuMC45Lw=="})),
    "list-items": http(200, [], json.dumps({"kind": "storage#objects", "items": [
        {"kind": "storage#object", "name": "gw/readme.txt", "generation": "1"}]})),
    "emulator-text": http(500, ["Content-Type: text/plain"], "Internal Server Error"),
    "envoy-504": s3["envoy-504"],
}
for name, data in gcs.items():
    put("gcs_response", name, data)

# --- XML helpers ----------------------------------------------------------------------
put("xml", "error", "Code\n" + s3["no-such-key"].split("\n\n", 1)[1])
put("xml", "message", "Message\n" + az["auth-failed"].split("\n\n", 1)[1])
put("xml", "prefix", "Prefix\n" + s3["list"].split("\n\n", 1)[1])
put("xml", "entities", "Name\n<Name>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#65;&#x42;&#x1F600; &bogus; &</Name>")

# --- token endpoint answers ----------------------------------------------------------
tok = {
    "ok": http(200, ["Content-Type: application/json; charset=utf-8"],
               json.dumps({"access_token": "ya29.c.b0AXv0zTOCANARY-fuzz-token", "expires_in": 3599,
                           "token_type": "Bearer"})),
    "ok-string-expiry": http(200, [], '{"access_token":"ya29.short","expires_in":"60","token_type":"bearer"}'),
    "ok-no-expiry": http(200, [], '{"access_token":"ya29.noexp"}'),
    "invalid-grant": http(400, [], json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
    "clock": http(400, [], json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a "
                                       "short-lived token (60 minutes) and in a reasonable timeframe. Check your "
                                       "iat and exp values in the JWT claim."})),
    "api-error": http(403, [], err(403, "PERMISSION_DENIED", "Permission denied", "forbidden")),
    "not-bearer": http(200, [], '{"access_token":"abc","token_type":"mac","expires_in":3600}'),
    "envoy-503": s3["envoy-503"],
    "no-answer": http(0, [], "the token request timed out"),
}
# The first byte picks the source and step (see the target): 0 a service
# account's token endpoint, 1 the GCP metadata server, 2 Azure IMDS, 3
# container credentials, 4-6 the IMDSv2 token, role and credentials steps.
for name, data in tok.items():
    for pick in (0, 1, 2):
        put("token_response", "%d-%s" % (pick, name), bytes([pick]) + data.encode())
aws_creds = {
    "AccessKeyId": "ASIAFUZZEXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/fuzz-secret",
    "Token": "IQoJb3JpZ2luX2VjEFUZZ-session-token", "Expiration": "2030-01-01T00:00:00Z",
}
aws = {
    "3-container-ok": http(200, ["Content-Type: application/json"], json.dumps(aws_creds)),
    "3-container-denied": http(401, [], json.dumps({"Code": "AccessDenied", "Message": "bad token"})),
    "3-container-expired": http(200, [], json.dumps(dict(aws_creds, Expiration="1970-01-01T00:00:00Z"))),
    "4-imds-token": http(200, [], "AQAEAFUZZ-imds-session-token=="),
    "4-imds-token-403": http(403, [], ""),
    "5-imds-role": http(200, [], "fleet-role\n"),
    "5-imds-no-role": http(404, [], "Not Found"),
    "6-imds-creds": http(200, [], json.dumps(dict(aws_creds, Code="Success", Type="AWS-HMAC",
                                                 LastUpdated="2029-12-31T18:00:00Z"))),
    "6-imds-failed": http(200, [], json.dumps({"Code": "AssumeRoleUnauthorizedAccess", "Message": "denied"})),
}
for name, data in aws.items():
    put("token_response", name, bytes([int(name[0])]) + data.encode())

# --- service accounts -------------------------------------------------------------------
put("service_account", "pkcs8", SA)
put("service_account", "escaped-newlines", SA.replace("\\n", "\\\\n"))
pk1 = KEY.replace("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY").replace("END PRIVATE KEY", "END RSA PRIVATE KEY")
put("service_account", "pkcs1-label", SA.replace(json.dumps(KEY)[1:-1], json.dumps(pk1)[1:-1]))
put("service_account", "user", json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "y",
                                           "refresh_token": "z"}))
put("service_account", "encrypted", json.dumps({"type": "service_account", "client_email": "a@b",
                                                "private_key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkq\n"
                                                               "-----END ENCRYPTED PRIVATE KEY-----\n"}))
put("service_account", "bad-uri", json.dumps({"type": "service_account", "client_email": "a@b", "private_key": KEY,
                                              "token_uri": "ftp://oauth2.googleapis.com/token"}))

# --- dates ------------------------------------------------------------------------------------
for i, d in enumerate(["Sun, 06 Nov 1994 08:49:37 GMT", "Fri, 15 Jan 2027 08:00:05 GMT",
                       "Tue, 29 Feb 2000 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT",
                       "2027-01-15T08:00:00Z", "2015-08-30T12:36:00.250Z", "2015-08-30T14:36:00+02:00",
                       "2015-08-30t10:36:00.123456789-02:00", "9999-12-31T23:59:60Z", "Sunday, 06-Nov-94 08:49:37 GMT"]):
    put("dates", "%02d" % i, d)

# --- SigV4 ---------------------------------------------------------------------------------------
put("sigv4", "get", "GET\n/fuzz-bucket/gw/0.1.0/config.json\n\nx-amz-meta-a: b\n")
put("sigv4", "list", "GET\n/fuzz-bucket\nlist-type=2&prefix=gw%2F&delimiter=%2F&continuation-token=1ueGcxLPRx1Tr%2FXY\n")
put("sigv4", "unicode", "GET\n/%E1%88%B4\n%E1%88%B4=%E1%88%B4&a=ሴ&Param1=value2&Param1=value1\n")
put("sigv4", "dots", "PUT\n/example/../a/./b//c/\nfoo=bar&foo=baz&empty&=v\nContent-Type: application/json\nMy-Header1:  a   b\n")
put("sigv4", "bad", "GE T\npath\n%zz\nhost: dup\n")

# --- versions ------------------------------------------------------------------------------------
put("version", "chain", "1.0.0\n1.0.0-alpha\n1.0.0-alpha.1\n1.0.0-alpha.beta\n1.0.0-beta\n1.0.0-beta.2\n"
                        "1.0.0-beta.11\n1.0.0-rc.1\n0.9.9+build.5\n0.1.0\n")
put("version", "folders", "0.2.0\n0.1.0\n0.1.0\n0.10.0\nlatest\n01.2.3\n0.1.1-rc.1+sha.5114f85\n0.0.9\n")

# --- JSON: the filter's reader against serde_json -------------------------------------------------
put("json", "config", CONFIGS["full"])
put("json", "escapes", r'["\"\\\/\b\f\n\r\t", "\u00e9\u20AC\u0000\u001f", "\ud83d\ude00\uDBFF\uDFFF", "é€😀", ""]')
put("json", "lone-surrogates", r'["\ud800", "\udc00", "\ud800\u0041", "\ud83d\n"]')
put("json", "numbers", "[0, -0, 7, -1, 18446744073709551615, 18446744073709551616, -9223372036854775808, "
                       "-9223372036854775809, 1.5, -0.0, 1e3, 1E-3, 2.5e+10, 4.9e-324, 1e-400, "
                       "1.7976931348623157e308, 1.7976931348623158e308, 0e99999999999]")
put("json", "out-of-range", "[1.7976931348623159e308, 1e309]")
put("json", "bad-numbers", "[01, -, 1., .5, 1e, +1, 0x1]")
put("json", "nested", "[" * 60 + '{"a":' * 67 + "0" + "}" * 67 + "]" * 60)
put("json", "too-deep", "[" * 128 + "]" * 128)
put("json", "duplicate-keys", '{"k":1,"b":[2,{"z":null,"z":false}],"k":{"x":"y"},"a":true,"":{}}')
put("json", "white-space", ' \n\t\r{ "a" :\n[ 1 ,\t2 ] , "b":{ } }\r\n ')
put("json", "trailing", '{"a":1} {"b":2}')
put("json", "trailing-commas", '{"a":[1,2,],"b":3,}')
put("json", "control-and-utf8", b'["tab\there", "\xff\xfe", "\xed\xa0\x80", "ok \xc3\xa9"]')
put("json", "plugin", plugin("s3://my-bucket/gw", storage={"endpoint": "http://127.0.0.1:9000", "timeout_ms": 5000},
                             cluster_fallback_export_s3_config='{"ServerSideEncryption":"aws:kms"}'))
put("json", "gcs-error", json.dumps({"error": {"code": 403, "message": "denied \u2014 no access",
                                               "errors": [{"reason": "forbidden", "domain": "global"}]}}))

print("seeds written")
