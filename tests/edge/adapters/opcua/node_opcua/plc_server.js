// A PLC-like OPC UA server on node-opcua, for zhizao's tests against a server stack nobody here wrote.
// Address space: two lines of PackML machines (State, StopReason, counters, speeds), a folder of process
// values of every scalar built-in type plus arrays, DateTime, LocalizedText and an enumeration, and folders
// of energy meters with the same object names in each folder: more than 500 variables in all.
// Security: one endpoint only, SignAndEncrypt / Basic256Sha256, user name + password; unknown client
// certificates are rejected (they land in <pki>/rejected until moved to <pki>/trusted/certs), as on a PLC.
// OperationLimits: MaxNodesPerRead / Browse / MonitoredItemsPerCall = LIMIT, enforced by node-opcua.
// Usage: node plc_server.js PORT PKI_DIR [LIMIT] [TICKS]  -> prints "READY <endpoint> <variables>" once
// listening; after a line "go" on stdin, every 200 ms for TICKS ticks each process value takes its next value
// (see VALUES), then prints "DONE".
"use strict";
const path = require("path");
const {
  OPCUAServer, OPCUACertificateManager, Variant, VariantArrayType, DataType, MessageSecurityMode, SecurityPolicy, LocalizedText,
} = require("node-opcua");

const port = Number(process.argv[2]);
const pki = process.argv[3];
const limit = Number(process.argv[4] || 100);
const ticks = Number(process.argv[5] || 5);

// name -> [DataType, values by tick]; tick 0 is the initial value.
const VALUES = {
  SByte: [DataType.SByte, [-128, -1, 0, 1, 127, 5]],
  Byte: [DataType.Byte, [0, 1, 128, 200, 255, 7]],
  Int16: [DataType.Int16, [-32768, -1, 0, 1, 32767, 9]],
  UInt16: [DataType.UInt16, [0, 1, 40000, 65535, 2, 3]],
  Int32: [DataType.Int32, [-2147483648, -1, 0, 1, 2147483647, 11]],
  UInt32: [DataType.UInt32, [0, 1, 3000000000, 4294967295, 4, 5]],
  Int64: [DataType.Int64, [[0xffffffff, 0xffffffff], [0, 0], [0, 1], [0x1fffff, 0xffffffff], [0, 12], [0, 13]]],
  UInt64: [DataType.UInt64, [[0, 0], [0, 1], [0x1fffff, 0xffffffff], [0, 2], [0, 3], [0, 4]]],
  Float: [DataType.Float, [0.5, -1.25, 3.75, 1e10, -0.0625, 2.5]],
  Double: [DataType.Double, [0.1, -2.5e-300, 1.7976931348623157e308, 3.141592653589793, -7.5, 42.0]],
  Boolean: [DataType.Boolean, [false, true, false, true, false, true]],
  String: [DataType.String, ["", "on", "漢字 ok", "a,b;c\"d", "off", "end"]],
};

async function main() {
  const certificateManager = new OPCUACertificateManager({
    rootFolder: pki, automaticallyAcceptUnknownCertificate: false,
  });
  await certificateManager.initialize();
  const server = new OPCUAServer({
    port,
    resourcePath: "/plc",
    serverCertificateManager: certificateManager,
    securityModes: [MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.Basic256Sha256],
    allowAnonymous: false,
    userManager: { isValidUser: (user, password) => user === "edge" && password === "s3cret" },
    serverCapabilities: {
      maxBrowseContinuationPoints: 10,
      operationLimits: {
        maxNodesPerRead: limit, maxNodesPerBrowse: limit, maxMonitoredItemsPerCall: limit,
        maxNodesPerWrite: limit, maxNodesPerMethodCall: limit,
      },
    },
    buildInfo: { productName: "zhizao test PLC (node-opcua)", manufacturerName: "zhizao tests" },
  });
  await server.initialize();
  const space = server.engine.addressSpace;
  const ns = space.getOwnNamespace();
  const variables = {}; // name path -> UAVariable

  const folder = (parent, name) => ns.addFolder(parent, { browseName: name, nodeId: `s=${name}` });
  const object = (parent, id, name) => ns.addObject({ organizedBy: parent, browseName: name, nodeId: `s=${id}` });
  const variable = (parent, id, name, dataType, value, valueRank = -1) => {
    const v = ns.addVariable({
      componentOf: parent, browseName: name, nodeId: `s=${id}`, dataType, valueRank,
      arrayDimensions: valueRank === 1 ? [value.length] : undefined,
      value: new Variant({ dataType, value, arrayType: valueRank === 1 ? VariantArrayType.Array : VariantArrayType.Scalar }),
    });
    variables[id] = v;
    return v;
  };

  const objects = space.rootFolder.objects;
  for (const [site, line, count] of [["sh-lingang", "press-1", 6], ["sh-lingang", "weld-2", 4]]) {
    const siteFolder = space.findNode(`ns=1;s=${site}`) || folder(objects, site);
    const lineFolder = ns.addFolder(siteFolder, { browseName: line, nodeId: `s=${site}/${line}` });
    for (let k = 1; k <= count; k++) {
      const id = `${site}/${line}/${line}-m0${k}`;
      const m = object(lineFolder, id, `${line}-m0${k}`);
      variable(m, `${id}/State`, "State", DataType.Int32, 6);
      variable(m, `${id}/StopReason`, "StopReason", DataType.Int32, 0);
      variable(m, `${id}/ProdProcessedCount`, "ProdProcessedCount", DataType.Int32, 1000 * k);
      variable(m, `${id}/ProdDefectiveCount`, "ProdDefectiveCount", DataType.Int32, 10 * k);
      variable(m, `${id}/MachSpeed`, "MachSpeed", DataType.Double, 60);
      variable(m, `${id}/CurMachSpeed`, "CurMachSpeed", DataType.Double, 60);
      const temp = ns.addObject({ componentOf: m, browseName: "Temperature", nodeId: `s=${id}/Temperature` });
      variable(temp, `${id}/Temperature/Spindle`, "Spindle", DataType.Double, 21.5);
    }
  }
  const proc = object(space.findNode("ns=1;s=sh-lingang/press-1"), "sh-lingang/press-1/press-1-m01/Process",
    "Process");
  // Process values below the first machine: every scalar type, then the types the agent does not carry yet.
  const pm = space.findNode("ns=1;s=sh-lingang/press-1/press-1-m01");
  for (const [name, [dataType, values]] of Object.entries(VALUES)) {
    variable(pm, `sh-lingang/press-1/press-1-m01/Process/${name}`, name, dataType, values[0]);
  }
  variable(proc, "sh-lingang/press-1/press-1-m01/Process/Stamp", "Stamp", DataType.DateTime,
    new Date(Date.UTC(2026, 0, 1)));
  variable(proc, "sh-lingang/press-1/press-1-m01/Process/Label", "Label", DataType.LocalizedText,
    new LocalizedText({ text: "Presse", locale: "de" }));
  variable(proc, "sh-lingang/press-1/press-1-m01/Process/Profile", "Profile", DataType.Double,
    [1.5, 2.5, 3.5], 1);
  variable(proc, "sh-lingang/press-1/press-1-m01/Process/Codes", "Codes", DataType.Int32, [1, 2, 3], 1);
  const modeType = ns.addEnumerationType({ browseName: "OperationModeEnum", enumeration: ["Manual", "Auto", "Setup"] });
  ns.addVariable({
    componentOf: proc, browseName: "Mode", nodeId: "s=sh-lingang/press-1/press-1-m01/Process/Mode",
    dataType: modeType, value: new Variant({ dataType: DataType.Int32, value: 1 }),
  });
  const utilities = folder(objects, "utilities");
  for (let h = 1; h <= 4; h++) {
    const hall = ns.addFolder(utilities, { browseName: `hall${h}`, nodeId: `s=utilities/hall${h}` });
    for (let k = 1; k <= 60; k++) {
      const id = `utilities/hall${h}/meter${k}`;
      const meter = object(hall, id, `meter${k}`);
      variable(meter, `${id}/Power`, "Power", DataType.Double, h * 1000 + k);
      variable(meter, `${id}/Energy`, "Energy", DataType.Double, 0);
    }
  }
  await server.start();
  const endpoint = server.getEndpointUrl();
  process.stdout.write(`READY ${endpoint} ${Object.keys(variables).length}\n`);

  let tick = 0;
  let timer;
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (line) => { if (line.trim() === "go" && !timer) timer = setInterval(step, 200); });
  const step = () => {
    tick += 1;
    if (tick > ticks) { clearInterval(timer); process.stdout.write(`DONE ${ticks}\n`); return; }
    const when = new Date();
    for (const [name, [dataType, values]] of Object.entries(VALUES)) {
      const v = variables[`sh-lingang/press-1/press-1-m01/Process/${name}`];
      v.setValueFromSource(new Variant({ dataType, arrayType: VariantArrayType.Scalar,
        value: values[Math.min(tick, values.length - 1)] }), undefined,
        when);
    }
  };
  const stop = async () => { clearInterval(timer); await server.shutdown(0); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { process.stderr.write(`plc_server: ${err.stack || err}\n`); process.exit(1); });
