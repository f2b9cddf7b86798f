// file-report: a Warden tool in JavaScript, built with componentize-js.
//
// Reads a text file through the `workspace` handle and reports its size and
// lines; with `url`, fetches that URL through the host, attaching the granted
// secret named by `secret` as `Authorization: Bearer ...` by reference (the
// tool holds a handle to the secret, never its value); with `save`, writes
// the report into the workspace too (which needs the write right).
//
// Its output is byte for byte what examples/tools/python/app.py returns for
// the same input, and .ci/polyglot checks both against the same grants.

import { open } from 'warden:tool/fs@0.1.0';
import { send } from 'warden:tool/http@0.1.0';
import { log } from 'warden:tool/log@0.1.0';
import { get as getSecret } from 'warden:tool/secrets@0.1.0';

const NAME = 'file-report';
const VERSION = '0.1.0';
const DESCRIPTION =
  "Report a workspace file's size and lines; optionally fetch a URL " +
  'authenticated with a granted secret (by reference) and save the report.';

const INPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  properties: {
    path: { type: 'string', description: 'A text file, relative to the workspace.' },
    url: { type: 'string', description: 'An http(s) URL inside the egress grant to GET.' },
    secret: {
      type: 'string',
      description: 'A granted secret to send to `url` as a bearer token, by reference.',
    },
    save: {
      type: 'string',
      description: 'Also write the report to this path in the workspace (needs write).',
    },
  },
  required: ['path'],
  additionalProperties: false,
};

const OUTPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  properties: {
    path: { type: 'string' },
    bytes: { type: 'integer', minimum: 0 },
    lines: { type: 'integer', minimum: 0 },
    first_line: { type: 'string' },
    fetched: {
      type: 'object',
      properties: {
        status: { type: 'integer' },
        body: { type: 'string' },
      },
      required: ['status', 'body'],
    },
  },
  required: ['path', 'bytes', 'lines', 'first_line'],
};

// componentize-js maps `result` to exceptions both ways: a host call's `err`
// is thrown with the error record as `payload`, and an export's `err` is the
// `payload` of what it throws.
class ToolError extends Error {
  constructor(kind, message) {
    super(message);
    this.payload = { kind, message };
  }
}

function unwrap(e) {
  return e && typeof e === 'object' && 'payload' in e ? e.payload : e;
}

// Maps a host error the way the Rust SDK does: a denial from fs or http keeps
// the host's message as it is, so it reads the same in every language.
// Error records are `{ code, message }`; fs, secrets and http share code names.
function toolError(e, iface = 'fs') {
  const err = unwrap(e);
  if (!err || typeof err.code !== 'string' || typeof err.message !== 'string') {
    return new ToolError('failed', String(e));
  }
  const described = `${err.code}: ${err.message}`;
  switch (err.code) {
    case 'denied':
      return new ToolError('denied', iface === 'secrets' ? described : err.message);
    case 'not-found':
      return new ToolError('not-found', err.message);
    case 'invalid-path':
    case 'invalid-request':
      return new ToolError('invalid-input', described);
    default:
      return new ToolError('failed', described);
  }
}

// Lines as Rust's `str::lines` counts them: a last line needs no `\n`.
// `indexOf` runs natively; a loop over every byte in the interpreter would
// take seconds on a large file.
function countLines(data) {
  let lines = 0;
  for (let i = data.indexOf(0x0a); i >= 0; i = data.indexOf(0x0a, i + 1)) {
    lines += 1;
  }
  return lines + (data.length > 0 && data[data.length - 1] !== 0x0a ? 1 : 0);
}

function report(params) {
  const workspace = open('workspace');
  const path = params.path;
  const data = workspace.read(path);
  // Counted on the bytes, and only the first line decoded, so a file as
  // large as a host call may carry fits the default memory.
  const newline = data.indexOf(0x0a);
  const out = {
    path,
    bytes: data.length,
    lines: countLines(data),
    first_line: new TextDecoder().decode(newline < 0 ? data : data.subarray(0, newline)),
  };
  if (params.url !== undefined) {
    // A handle to the secret: its value never enters this instance.
    let bearer;
    if (params.secret !== undefined) {
      try {
        bearer = getSecret(params.secret);
      } catch (e) {
        throw toolError(e, 'secrets');
      }
    }
    const response = send({ method: 'GET', url: params.url, headers: [], body: undefined }, bearer);
    out.fetched = {
      status: response.status,
      body: new TextDecoder().decode(response.body),
    };
  }
  if (params.save !== undefined) {
    workspace.write(params.save, new TextEncoder().encode(JSON.stringify(out)));
  }
  log('info', `reported on ${path}`);
  return out;
}

export const guest = {
  describe() {
    return {
      name: NAME,
      version: VERSION,
      description: DESCRIPTION,
      inputSchema: JSON.stringify(INPUT_SCHEMA),
      outputSchema: JSON.stringify(OUTPUT_SCHEMA),
      handles: [
        {
          name: 'workspace',
          rights: { read: true, write: false, delete: false },
          description: 'the file to report on (write, only to save the report)',
        },
      ],
    };
  },

  // JSON in, JSON out. The host has checked `input` against INPUT_SCHEMA
  // before this runs.
  invoke(input) {
    const params = JSON.parse(input);
    try {
      return JSON.stringify(report(params));
    } catch (e) {
      throw e instanceof ToolError ? e : toolError(e);
    }
  },
};
