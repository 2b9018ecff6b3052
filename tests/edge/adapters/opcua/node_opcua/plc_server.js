// A PLC-like OPC UA server on node-opcua, for zhizao's tests against a server stack nobody here wrote.
// Address space: two lines of PackML machines (State, StopReason, counters, speeds), process values of every
// scalar built-in type, a Process object with DateTime, LocalizedText, Guid, an enumeration and arrays, and folders
// of energy meters with the same object names in each folder: more than 500 variables in all.
// Security: one endpoint only, SignAndEncrypt / Basic256Sha256, user name + password; unknown client
// certificates are rejected (they land in <pki>/rejected until moved to <pki>/trusted/certs), as on a PLC.
// OperationLimits: MaxNodesPerRead / Browse / MonitoredItemsPerCall = LIMIT, enforced by node-opcua.
// Usage: node plc_server.js PORT PKI_DIR [LIMIT] [TICKS]  -> prints "READY <endpoint> <variables>" once
// listening; after a line "go" on stdin, every 200 ms for TICKS ticks each process value takes its next value
// (see VALUES, TYPED and MODES), then prints "DONE".
"use strict";
const path = require("path");
const {
  OPCUAServer, OPCUACertificateManager, Variant, VariantArrayType, DataType, MessageSecurityMode, SecurityPolicy, LocalizedText,
  StatusCodes, coerceNodeId, coerceQualifiedName, NodeClass, ensureDatatypeExtracted,
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
  // Int64/UInt64 as [high, low] 32-bit words: -1, 0, 2^63-1, -2^63, 2^53+1, -(2^53+1) and 0, 2^64-1, 2^53+1, 2^53,
  // 2^64-2, 2^53-1: values beyond 2^53 that a float64 would round.
  Int64: [DataType.Int64, [[0xffffffff, 0xffffffff], [0, 0], [0x7fffffff, 0xffffffff], [0x80000000, 0],
    [0x200000, 1], [0xffdfffff, 0xffffffff]]],
  UInt64: [DataType.UInt64, [[0, 0], [0xffffffff, 0xffffffff], [0x200000, 1], [0x200000, 0], [0xffffffff, 0xfffffffe],
    [0x1fffff, 0xffffffff]]],
  Float: [DataType.Float, [0.5, -1.25, 3.75, 1e10, -0.0625, 2.5]],
  Double: [DataType.Double, [0.1, -2.5e-300, 1.7976931348623157e308, 3.141592653589793, -7.5, 42.0]],
  Boolean: [DataType.Boolean, [false, true, false, true, false, true]],
  String: [DataType.String, ["", "on", "漢字 ok", "a,b;c\"d", "off", "end"]],
};

// Below the Process object: name -> [DataType, values by tick, valueRank (-1 scalar, 1 array, 2 a 2x2 matrix)].
const stamp = (...args) => new Date(Date.UTC(...args));
const big = (high, low) => [high, low];
const TYPED = {
  Stamp: [DataType.DateTime, [stamp(2026, 0, 1), stamp(2026, 5, 30, 12, 30, 15, 123), new Date(0),
    stamp(2099, 11, 31, 23, 59, 59, 999), stamp(2000, 1, 29), stamp(2026, 0, 1, 0, 0, 0, 1)], -1],
  Label: [DataType.LocalizedText, [{ text: "Presse", locale: "de" }, { text: "Press", locale: "en" },
    { text: "压力机", locale: "zh-CN" }, { text: "", locale: "en" }, { text: "a\"b", locale: "en" },
    { text: "end", locale: "en" }].map((t) => new LocalizedText(t)), -1],
  Id: [DataType.Guid, ["12345678-1234-5678-9ABC-DEF012345678", "00000000-0000-0000-0000-000000000001",
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "0A0B0C0D-0E0F-1011-1213-141516171819",
    "12345678-1234-5678-9ABC-DEF012345679", "DEADBEEF-0000-4000-8000-00000000CAFE"], -1],
  Profile: [DataType.Double, [[1.5, 2.5, 3.5], [], [0.1, -1e300], [42.0], [1, 2, 3, 4, 5, 6, 7, 8], [-0.5]], 1],
  Codes: [DataType.Int32, [[1, 2, 3], [-2147483648, 2147483647], [], [0], [7, 7, 7], [9]], 1],
  Gains: [DataType.Float, [[0.5, -1.25], [3.75], [], [1e10], [-0.0625, 2.5, 0.25], [8]], 1],
  Names: [DataType.String, [["a", "b"], [], ["漢字", "x,y"], [""], ["end"], ["p", "q", "r"]], 1],
  Flags: [DataType.Boolean, [[true, false, true], [], Array(9).fill(false).map((_, i) => i % 4 === 0), [true],
    [false, true], Array(10).fill(true)], 1],
  Serials: [DataType.UInt64, [[big(0xffffffff, 0xffffffff), big(0, 1)], [], [big(0x200000, 1)], [big(0, 0)],
    [big(0x200000, 0), big(0x200000, 3)], [big(0, 7)]], 1],
  Offsets: [DataType.Int64, [[big(0x80000000, 0), big(0x7fffffff, 0xffffffff)], [big(0xffffffff, 0xffffffff)], [],
    [big(0xffdfffff, 0xffffffff)], [big(0, 5)], [big(0x200000, 1), big(0, 0)]], 1],
  Stamps: [DataType.DateTime, [[stamp(2026, 0, 1), new Date(0)], [], [stamp(2026, 6, 4, 8, 0, 0, 250)],
    [stamp(2030, 0, 1)], [stamp(2026, 0, 1), stamp(2026, 0, 2)], [stamp(2027, 2, 3)]], 1],
  // The types with no Sparkplug numeric form: ByteString, a matrix, NodeId, QualifiedName, StatusCode, XmlElement.
  Blob: [DataType.ByteString, [[0, 255, 122], [9, 9], [1], [104, 105, 0, 0], [7, 7, 7, 7, 7], [0]].map((b) => Buffer.from(b)), -1],
  Grid: [DataType.Double, [[1.5, 2.5, 3.5, 4.5], [0, -1, 1e300, 0.25], [1, 1, 1, 1], [2, 2, 2, 2], [-0.5, 0, 0, 8],
    [9, 8, 7, 6]], 2],
  Ref: [DataType.NodeId, ["ns=1;s=sh-lingang/press-1", "ns=0;i=85", "ns=1;i=4242", "ns=1;s=漢字", "ns=0;i=2253",
    "ns=1;s=end"].map((n) => coerceNodeId(n)), -1],
  QName: [DataType.QualifiedName, ["1:Spindle", "0:Server", "1:漢字", "1:a b", "0:Objects", "1:end"]
    .map((q) => coerceQualifiedName(q)), -1],
  Code: [DataType.StatusCode, [StatusCodes.Good, StatusCodes.BadNodeIdUnknown, StatusCodes.BadOutOfRange,
    StatusCodes.UncertainInitialValue, StatusCodes.Good, StatusCodes.BadTimeout], -1],
  Xml: [DataType.XmlElement, ["<a/>", "<tool id='7'>drill</tool>", "<b>漢字</b>", "<c x=\"1\"/>", "<d></d>", "<end/>"], -1],
};
const MODES = [1, 0, 2, 1, 2, 0]; // the enumeration's Int32 codes by tick
// Structures below the Process object: a standard one (Range) and one of the PLC's own types (ToolSetup, in the
// namespace urn:zhizao:plc-types, with its DataTypeDefinition): name -> [DataType name, field values by tick].
const STRUCTS = {
  Limits: ["Range", [{ low: 0, high: 100 }, { low: -1.5, high: 1.5 }, { low: 0.25, high: 1e300 }, { low: 1, high: 2 },
    { low: 2, high: 3 }, { low: 3, high: 4 }]],
  Setup: ["ToolSetup", [{ tool: "T1", offset: 0.25, count: 3 }, { tool: "T2", offset: -1, count: 0 },
    { tool: "漢字", offset: 0, count: -7 }, { tool: "", offset: 1e-300, count: 2147483647 },
    { tool: "a\"b", offset: 8, count: 1 }, { tool: "end", offset: 9, count: 2 }]],
};

const ARRAY_TYPE = { "-1": VariantArrayType.Scalar, 1: VariantArrayType.Array, 2: VariantArrayType.Matrix };
const variant = (dataType, value, rank = -1) => new Variant({ dataType, value, arrayType: ARRAY_TYPE[rank],
  dimensions: rank === 2 ? [2, 2] : undefined });

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
      arrayDimensions: valueRank === 1 ? [value.length] : valueRank === 2 ? [2, 2] : undefined,
      value: variant(dataType, value, valueRank),
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
  for (const [name, [dataType, values, rank]] of Object.entries(TYPED)) {
    variable(proc, `sh-lingang/press-1/press-1-m01/Process/${name}`, name, dataType, values[0], rank);
  }
  const modeType = ns.addEnumerationType({ browseName: "OperationModeEnum", enumeration: ["Manual", "Auto", "Setup"] });
  variables["sh-lingang/press-1/press-1-m01/Process/Mode"] = ns.addVariable({
    componentOf: proc, browseName: "Mode", nodeId: "s=sh-lingang/press-1/press-1-m01/Process/Mode",
    dataType: modeType, value: new Variant({ dataType: DataType.Int32, value: MODES[0] }),
  });
  const types = space.registerNamespace("urn:zhizao:plc-types");
  const toolSetup = types.createDataType({ browseName: "ToolSetup", isAbstract: false, subtypeOf: "Structure",
    partialDefinition: [{ name: "Tool", dataType: DataType.String }, { name: "Offset", dataType: DataType.Double },
      { name: "Count", dataType: DataType.Int32 }] });
  types.createNode({ nodeClass: NodeClass.Object, browseName: { name: "Default Binary", namespaceIndex: 0 },
    typeDefinition: "DataTypeEncodingType", references: [{ referenceType: "HasEncoding", isForward: false,
      nodeId: toolSetup.nodeId }] });
  await ensureDatatypeExtracted(space);
  const structure = (type, fields) => space.constructExtensionObject(space.findDataType(type, type === "Range" ? 0 : types.index), fields);
  for (const [name, [type, values]] of Object.entries(STRUCTS)) {
    const id = `sh-lingang/press-1/press-1-m01/Process/${name}`;
    variables[id] = ns.addVariable({
      componentOf: proc, browseName: name, nodeId: `s=${id}`, dataType: space.findDataType(type, type === "Range" ? 0 : types.index),
      value: new Variant({ dataType: DataType.ExtensionObject, value: structure(type, values[0]) }),
    });
  }
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
    const set = (name, dataType, value, rank = -1) => variables[`sh-lingang/press-1/press-1-m01/Process/${name}`]
      .setValueFromSource(variant(dataType, value, rank), undefined, when);
    const at = (values) => values[Math.min(tick, values.length - 1)];
    for (const [name, [dataType, values]] of Object.entries(VALUES)) set(name, dataType, at(values));
    for (const [name, [dataType, values, rank]] of Object.entries(TYPED)) set(name, dataType, at(values), rank);
    set("Mode", DataType.Int32, at(MODES));
    for (const [name, [type, values]] of Object.entries(STRUCTS)) set(name, DataType.ExtensionObject, structure(type, at(values)));
  };
  const stop = async () => { clearInterval(timer); await server.shutdown(0); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { process.stderr.write(`plc_server: ${err.stack || err}\n`); process.exit(1); });
