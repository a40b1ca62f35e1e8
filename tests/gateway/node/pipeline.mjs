// A two-call pipeline with the official `openai` npm package: draft, then summarize the draft.
// It knows nothing of opto: the client reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment.
// Reads the topic on stdin, prints the summary on stdout.
import OpenAI from "openai";

const client = new OpenAI();
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const topic = Buffer.concat(chunks).toString("utf8").trim();

const draft = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [
    { role: "system", content: "You write a short first draft about the topic you are given." },
    { role: "user", content: `Topic: ${topic}` },
  ],
  temperature: 0.7,
});
const text = draft.choices[0].message.content;

// the second call streams its answer
const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [
    { role: "system", content: "You summarize a draft in one sentence." },
    { role: "user", content: `Summarize this draft:\n${text}` },
  ],
  stream: true,
});
let summary = "";
for await (const part of stream) summary += part.choices[0]?.delta?.content ?? "";
console.log(summary);
