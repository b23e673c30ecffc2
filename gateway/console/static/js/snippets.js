// The playground's current query as a curl command or as a call of the official Python SDK
// (llama-cloud), with the key read from $QUARRY_API_KEY rather than pasted in.

const KEY_VAR = "QUARRY_API_KEY";

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curl(origin, request) {
  return [
    `curl -sS -X POST ${shellQuote(origin + request.path)} \\`,
    `  -H "Authorization: Bearer $${KEY_VAR}" \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify(request.body))}`,
  ].join("\n");
}

/** A JSON value as a Python literal. */
export function py(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) return `[${value.map((v) => py(v, indent)).join(", ")}]`;
  const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)},`);
  return items.length ? `{\n${items.join("\n")}\n${indent}}` : "{}";
}

function kwargs(fields) {
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `    ${k}=${py(v, "    ")},`);
}

export function python(origin, request) {
  const head = [
    "import os",
    "",
    "from llama_cloud import LlamaCloud",
    "",
    `client = LlamaCloud(api_key=os.environ[${JSON.stringify(KEY_VAR)}], base_url=${JSON.stringify(origin)})`,
  ];
  const b = request.body;
  if (request.api === "pipelines") {
    const { query, ...rest } = b;
    return [
      ...head,
      "response = client.pipelines.retrieve(",
      `    ${JSON.stringify(request.indexId)},`,
      ...kwargs({ query, ...rest }),
      ")",
      "for n in response.retrieval_nodes:",
      "    print(n.score, n.node.text[:80])",
    ].join("\n");
  }
  const { fusion, ...known } = b;
  return [
    ...head,
    "response = client.retrieval.retrieve(",
    ...kwargs(known),
    ...(fusion ? [`    extra_body={"fusion": ${JSON.stringify(fusion)}},  # a Quarry extension field`] : []),
    ")",
    "for r in response.results:",
    "    print(r.score, r.rerank_score, r.content[:80])",
  ].join("\n");
}
