// An OPC UA client not built on asyncua (node-opcua) against the running lineside HMI server:
// connects, reads the explanation text, receives result events.
//
//   npm install --prefix /tmp/hmi-node node-opcua-client@2.186.4
//   NODE_PATH=/tmp/hmi-node/node_modules node hil/hmi_client_check.cjs opc.tcp://127.0.0.1:4840/lineside/ [events]
//
// Prints one JSON line {"explanation": ..., "events": [{part, message, content}], ...}; exit 0
// when the explanation was read and the wanted number of ResultReadyEvents arrived.
"use strict";
const {
  OPCUAClient, AttributeIds, MessageSecurityMode, SecurityPolicy, TimestampsToReturn,
  constructEventFilter, NodeId,
} = require("node-opcua-client");

const MV = "http://opcfoundation.org/UA/MachineVision";
const HMI = "urn:lineside:hmi";

async function main() {
  const url = process.argv[2];
  const wanted = Number(process.argv[3] || 3);
  const client = OPCUAClient.create({
    applicationName: "hmi-client-check",
    securityMode: MessageSecurityMode.None,
    securityPolicy: SecurityPolicy.None,
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 2, initialDelay: 200 },
  });
  await client.connect(url);
  const session = await client.createSession(); // anonymous
  const ns = (await session.readNamespaceArray());
  const hmi = ns.indexOf(HMI), mv = ns.indexOf(MV);
  if (hmi < 0 || mv < 0) throw new Error(`namespaces missing: ${JSON.stringify(ns)}`);

  const sub = await session.createSubscription2({
    requestedPublishingInterval: 50, requestedMaxKeepAliveCount: 20,
    requestedLifetimeCount: 600, publishingEnabled: true, priority: 1,
  });
  const fields = ["EventType", "Message", "SourceName", `${mv}:ResultContent`];
  const filter = constructEventFilter(fields.map((f) => (f.includes(":") ? f : f)));
  const item = await sub.monitor(
    { nodeId: `ns=${hmi};s=VisionSystem`, attributeId: AttributeIds.EventNotifier },
    { queueSize: 1000, filter, discardOldest: false },
    TimestampsToReturn.Neither,
  );
  const events = [];
  const done = new Promise((resolve) => {
    item.on("changed", (values) => {
      const type = values[0].value.toString();
      if (type !== new NodeId(NodeId.NodeIdType.NUMERIC, 1024, mv).toString()) return;
      const content = (values[3].value || []).map((v) => (v.value && v.value.text !== undefined ? v.value.text : v.value));
      events.push({ message: values[1].value.text, source: values[2].value, content });
      if (events.length >= wanted) resolve();
    });
  });
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no events")), 20000));
  await Promise.race([done, timeout]);
  const explanation = await session.read({
    nodeId: `ns=${hmi};s=Lineside.LastResult.Explanation`, attributeId: AttributeIds.Value,
  });
  const state = await session.read({
    nodeId: `ns=${hmi};s=VisionSystem.VisionStateMachine.CurrentState`, attributeId: AttributeIds.Value,
  });
  console.log(JSON.stringify({
    client: "node-opcua",
    explanation: explanation.value.value,
    state: state.value.value.text,
    events,
  }));
  await sub.terminate();
  await session.close();
  await client.disconnect();
}

main().then(() => process.exit(0), (err) => { console.error(err.message || err); process.exit(1); });
