/**
 * End-to-end check of rlm-mcp from the TypeScript MCP SDK (1.x, protocol 2025-11-25).
 *
 *   tsx src/check.ts stdio [command [args...]]   spawn the server (default: $RLM_MCP_COMMAND or "rlm-mcp")
 *   tsx src/check.ts http <url>                  connect to a running `rlm-mcp --http`, e.g. http://127.0.0.1:8000/mcp
 *
 * It lists the tools, loads a context, runs exec_python whose llm_query / llm_query_batched calls
 * are answered by this client's sampling handler (the uppercase of the prompt), checks the answers
 * came back in order, and checks rlm_status reports the sampling backend. Exit 0 on success; on any
 * failure, a "FAIL [transport]: ..." line on stderr and exit 1 (2 for bad usage).
 */

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  type CallToolResult,
  type CreateMessageResult,
  CreateMessageRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const EXPECTED_TOOLS = [
  "load_context",
  "list_contexts",
  "peek",
  "search",
  "exec_python",
  "get_variable",
  "sub_query",
  "answer_sub_queries",
  "rlm_status",
  "reset_session",
  "rlm_solve",
];

const EXPECTED_PROTOCOL = "2025-11-25";
const TIMEOUT_MS = 30_000;

const CONTEXT = ["alpha: the first line", "beta: the second line", "gamma: the third line", "delta: the last line"].join(
  "\n",
);

// One llm_query, then a batch whose answers must come back in prompt order even though this
// client answers the batch's requests in reverse order of arrival (see the sampling handler).
const CODE = `lines = context.splitlines()
first = llm_query("first word: " + lines[0].split(":")[0])
rest = llm_query_batched(["word " + str(i) + ": " + line.split(":")[0] for i, line in enumerate(lines[1:])])
print(len(rest))
FINAL(" | ".join([first] + rest))
`;
const EXPECTED_FINAL = "FIRST WORD: ALPHA | WORD 0: BETA | WORD 1: GAMMA | WORD 2: DELTA";

class CheckFailed extends Error {}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CheckFailed(message);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** What the sampling handler saw: prompts in arrival order and the most requests in flight at once. */
const sampling = { prompts: [] as string[], inFlight: 0, maxInFlight: 0 };

function makeClient(): Client {
  const client = new Client({ name: "rlm-mcp-ts-check", version: "0.1.0" }, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async (request): Promise<CreateMessageResult> => {
    const last = request.params.messages.at(-1);
    const content = Array.isArray(last?.content) ? last?.content[0] : last?.content;
    if (last?.role !== "user" || content?.type !== "text") {
      throw new Error(`expected a user text message last, got ${JSON.stringify(last)}`);
    }
    const arrival = sampling.prompts.push(content.text);
    sampling.inFlight += 1;
    sampling.maxInFlight = Math.max(sampling.maxInFlight, sampling.inFlight);
    try {
      // Earlier arrivals wait longer, so concurrent requests complete in reverse order.
      await sleep(Math.max(0, 8 - arrival) * 30);
      return { role: "assistant", model: "uppercase-echo", content: { type: "text", text: content.text.toUpperCase() } };
    } finally {
      sampling.inFlight -= 1;
    }
  });
  return client;
}

/** The tool's JSON result: structuredContent, else the text block parsed. Tool errors fail the check. */
function data(name: string, result: CallToolResult): Record<string, any> {
  const text = result.content.map((block) => (block.type === "text" ? block.text : `[${block.type}]`)).join("\n");
  check(!result.isError, `${name} returned a tool error: ${text}`);
  if (result.structuredContent) return result.structuredContent as Record<string, any>;
  try {
    return JSON.parse(text);
  } catch {
    throw new CheckFailed(`${name} returned neither structured content nor JSON text: ${text.slice(0, 500)}`);
  }
}

async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const result = (await client.callTool({ name, arguments: args }, undefined, { timeout: TIMEOUT_MS })) as CallToolResult;
  return data(name, result);
}

function makeTransport(argv: string[]): { label: string; target: string; transport: Transport } {
  const [kind, ...rest] = argv;
  if (kind === "stdio") {
    const [command = process.env.RLM_MCP_COMMAND || "rlm-mcp", ...args] = rest;
    // The SDK's default environment (PATH, HOME, ...) is enough; stderr stays ours so server logs show.
    const target = [command, ...args].join(" ");
    return { label: "stdio", target, transport: new StdioClientTransport({ command, args, stderr: "inherit" }) };
  }
  if (kind === "http" && rest.length === 1) {
    let url: URL;
    try {
      url = new URL(rest[0]);
    } catch {
      usage(`not a URL: ${rest[0]}`);
    }
    return { label: "http", target: url.href, transport: new StreamableHTTPClientTransport(url) };
  }
  usage(kind ? `unknown arguments: ${argv.join(" ")}` : "missing transport");
}

function usage(message: string): never {
  console.error(`${message}\nusage: check.ts stdio [command [args...]] | check.ts http <url>`);
  process.exit(2);
}

async function run(label: string, target: string, transport: Transport): Promise<void> {
  let negotiated: string | undefined;
  const setProtocolVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version: string) => {
    negotiated = version;
    setProtocolVersion?.(version);
  };

  const client = makeClient();
  const started = Date.now();
  const step = (message: string) => console.log(`ok [${label}] ${message} (${Date.now() - started} ms)`);
  try {
    await client.connect(transport, { timeout: TIMEOUT_MS });
  } catch (error) {
    throw new CheckFailed(`could not connect to ${target}: ${error instanceof Error ? error.message : String(error)}`);
  }
  try {
    const server = client.getServerVersion();
    check(server?.name === "rlm-mcp", `server name is ${JSON.stringify(server?.name)}, expected "rlm-mcp"`);
    check(negotiated === EXPECTED_PROTOCOL, `negotiated protocol ${negotiated}, expected ${EXPECTED_PROTOCOL}`);
    step(`connected to ${server.name} ${server.version}, protocol ${negotiated}`);

    const { tools } = await client.listTools();
    const names = new Set(tools.map((tool) => tool.name));
    const missing = EXPECTED_TOOLS.filter((name) => !names.has(name));
    check(missing.length === 0, `tools/list lacks ${missing.join(", ")}; it has ${[...names].join(", ")}`);
    step(`tools/list has all ${EXPECTED_TOOLS.length} expected tools (${names.size} in all)`);

    const loaded = await call(client, "load_context", { text: CONTEXT });
    check(loaded.name === "context", `load_context named it ${JSON.stringify(loaded.name)}, expected "context"`);
    check(loaded.chars === CONTEXT.length, `load_context counted ${loaded.chars} chars, expected ${CONTEXT.length}`);
    check(loaded.lines === 4, `load_context counted ${loaded.lines} lines, expected 4`);
    step(`load_context: ${loaded.chars} chars, ${loaded.lines} lines, ${loaded.tokens} tokens (${loaded.token_encoding})`);

    const ran = await call(client, "exec_python", { code: CODE });
    check(ran.status === "ok", `exec_python status ${ran.status}: ${ran.error ?? JSON.stringify(ran)}`);
    check(ran.final === EXPECTED_FINAL, `FINAL was ${JSON.stringify(ran.final)}, expected ${JSON.stringify(EXPECTED_FINAL)}`);
    check(String(ran.stdout).trim() === "3", `stdout was ${JSON.stringify(ran.stdout)}, expected "3"`);
    check(sampling.prompts.length === 4, `the sampling handler got ${sampling.prompts.length} requests, expected 4`);
    check(sampling.maxInFlight > 1, "llm_query_batched sent its sampling requests one at a time, not concurrently");
    step(`exec_python: FINAL in order from ${sampling.prompts.length} sampling requests (${sampling.maxInFlight} at once)`);

    const status = await call(client, "rlm_status");
    check(status.sub_llm?.mode === "sampling", `rlm_status sub_llm.mode is ${JSON.stringify(status.sub_llm?.mode)}, expected "sampling"`);
    check(status.sub_queries?.used === 4, `rlm_status counts ${status.sub_queries?.used} sub-queries, expected 4`);
    step(`rlm_status: sub_llm.mode sampling, ${status.sub_queries.used} sub-queries used`);
  } finally {
    if (transport instanceof StreamableHTTPClientTransport) {
      await transport.terminateSession().catch(() => undefined); // free the server's session now
    }
    await client.close();
  }
}

async function main(): Promise<void> {
  const { label, target, transport } = makeTransport(process.argv.slice(2));
  try {
    await run(label, target, transport);
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : error instanceof Error ? error.stack ?? error.message : String(error);
    console.error(`FAIL [${label}]: ${message}`);
    process.exit(1);
  }
  console.log(`PASS [${label}]`);
}

await main();
