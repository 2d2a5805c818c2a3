import { test } from "node:test";
import assert from "node:assert/strict";
import { renderTermsMarkdown } from "./terms.js";
import { escapeHtml, pickLang } from "../api/client/terms.js";

test("terms Markdown: raw HTML is shown as text, never interpreted", () => {
  const html = renderTermsMarkdown('# Regeln\n\n<script>alert("x")</script>\n\n<img src=x onerror=alert(1)>\n\nText <b onclick="y()">fett</b>\n\n<iframe src="https://evil.example"></iframe>');
  assert.match(html, /<h1>Regeln<\/h1>/);
  assert.match(html, /&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/);
  assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
  assert.match(html, /&lt;b onclick=&quot;y\(\)&quot;&gt;fett&lt;\/b&gt;/);
  // Not one tag from the source survives as a tag.
  assert.doesNotMatch(html, /<(script|img|iframe|b)[\s>]/i);
});

test("terms Markdown: only http(s) and mailto links become links, with rel noopener; images stay text", () => {
  const html = renderTermsMarkdown(
    "[a](https://polizei.example/datenschutz) [b](mailto:dsb@polizei.example) [c](javascript:alert(1)) [d](JAVASCRIPT:alert(1)) [e](data:text/html,<script>x</script>) [f](vbscript:x) [g](//evil.example) ![bild](https://tracker.example/p.png) <javascript:alert(1)>",
  );
  assert.match(html, /<a href="https:\/\/polizei\.example\/datenschutz" rel="noopener noreferrer nofollow">a<\/a>/);
  assert.match(html, /<a href="mailto:dsb@polizei\.example" rel="noopener noreferrer nofollow">b<\/a>/);
  const hrefs = [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]);
  // The image syntax is off: what remains is "!" and a plain link the reader may or may not follow.
  assert.deepEqual(hrefs, ["https://polizei.example/datenschutz", "mailto:dsb@polizei.example", "https://tracker.example/p.png"]);
  assert.doesNotMatch(html, /<img/);
  assert.doesNotMatch(html, /<script/);
});

test("terms Markdown: attribute values in link titles are escaped", () => {
  const html = renderTermsMarkdown('[x](https://a.example/ "t\\" onmouseover=\\"alert(1)")');
  assert.match(html, /title="t&quot; onmouseover=&quot;alert\(1\)"/);
});

test("consent page helpers: HTML escaping and the page language (German unless asked otherwise)", () => {
  assert.equal(escapeHtml(`<a href="x" title='y'>&</a>`), "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;");
  assert.equal(pickLang(undefined, undefined), "de");
  assert.equal(pickLang(undefined, "fr-FR,fr;q=0.9"), "de");
  assert.equal(pickLang(undefined, "en-US,en;q=0.9,de;q=0.8"), "en");
  assert.equal(pickLang(undefined, "fr;q=1, de;q=0.5, en;q=0.7"), "en");
  assert.equal(pickLang(undefined, "en;q=0, de-AT"), "de");
  assert.equal(pickLang("en", "de"), "en");
  assert.equal(pickLang("xx", "en"), "en");
});
