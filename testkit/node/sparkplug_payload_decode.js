// Decodes Sparkplug B payloads with Eclipse Tahu's JavaScript codec
// (sparkplug-payload), as a Node.js host application would: one base64
// payload per line on stdin, one JSON line per payload on stdout with
// each metric's name, alias, type and value (null when the decoder gives
// none). Installed by scripts/test into .node/ (npm ci).
'use strict';
const sparkplug = require('sparkplug-payload').get('spBv1.0');

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  for (const line of input.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const payload = sparkplug.decodePayload(Buffer.from(line, 'base64'));
    const metrics = (payload.metrics || []).map((m) => ({
      name: m.name === undefined ? null : m.name,
      alias: m.alias === undefined || m.alias === null ? null : Number(m.alias.toString()),
      type: m.type === undefined ? null : m.type,
      value: m.value === undefined || m.value === null ? null
        : (typeof m.value === 'object' && typeof m.value.toNumber === 'function' ? m.value.toNumber() : m.value),
    }));
    console.log(JSON.stringify({ seq: payload.seq === undefined ? null : Number(payload.seq.toString()), metrics }));
  }
});
