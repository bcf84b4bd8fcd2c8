// Route one prediction from Node.js and print the decision as JSON:
//   node route.mjs 127.0.0.1:7431 order-8812 fraud 0.1,2.3,-0.4
// Needs @grpc/grpc-js and @grpc/proto-loader, and the contract's proto/ directory
// (HITL_PROTO_DIR, ./proto by default).
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const definition = protoLoader.loadSync("hitl/v1/router.proto", {
  includeDirs: [process.env.HITL_PROTO_DIR ?? "proto"],
  keepCase: true, // field names as in the .proto: request_id, calibrated_confidence
  enums: String, // enum values by name: "TIER_AUTOMATED"
  longs: Number, // policy_revision (an int64) as a number
  defaults: true, // unset fields as their defaults: escalation_id "", degraded false
});
const { hitl } = grpc.loadPackageDefinition(definition);

// hitl-client's retry policy: UNAVAILABLE (a sidecar starting or restarting) is
// retried, 4 attempts in all, with backoff. A retry resends the same request_id,
// so the sidecar answers it with the original decision and escalates at most once.
const ROUTER = "hitl.v1.Router";
const serviceConfig = {
  methodConfig: [
    {
      name: ["Route", "RouteBatch", "RecordOutcome"].map((method) => ({ service: ROUTER, method })),
      retryPolicy: {
        maxAttempts: 4,
        initialBackoff: "0.02s",
        maxBackoff: "0.5s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
    },
  ],
};

// One client per process; reuse it.
function router(target) {
  return new hitl.v1.Router(target, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(serviceConfig),
  });
}

// Every call gets a deadline (1 s, as hitl-client's default) and, when the caller
// has one, its W3C trace context (with @opentelemetry/instrumentation-grpc
// installed, OpenTelemetry adds it for you).
function route(client, request, { timeoutMs = 1000, traceparent } = {}) {
  const metadata = new grpc.Metadata();
  if (traceparent) metadata.set("traceparent", traceparent);
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    client.Route(request, metadata, { deadline }, (error, decision) =>
      error ? reject(error) : resolve(decision),
    );
  });
}

const [target = "127.0.0.1:7431", requestId, model, logits] = process.argv.slice(2);
const client = router(target);
try {
  const decision = await route(client, {
    request_id: requestId, // attribution and idempotency key
    model, // model named in the policy
    logits: logits.split(",").map(Number), // the model's output, one value per class
    input_kind: "INPUT_KIND_LOGITS", // or INPUT_KIND_PROBABILITIES
    domain: "eu", // whose thresholds apply
    numeric_attributes: { amount: 1250.0 }, // what rules test
    string_attributes: { channel: "web" },
    input_ref: `s3://inputs/${requestId}.json`, // where a reviewer finds the input
    context: { customer: "c-19" }, // carried to the reviewer and the audit log
  });
  console.log(JSON.stringify(decision));
  // decision.tier === "TIER_AUTOMATED": act on decision.predicted_label;
  // otherwise hold the request for review under decision.escalation_id.
} catch (error) {
  // error.code is a gRPC status; for INVALID_ARGUMENT, error.details starts with
  // the field's name (docs/calling.md's table of errors says what to do).
  console.error(`${grpc.status[error.code]}: ${error.details}`);
  process.exitCode = 1;
} finally {
  client.close();
}
