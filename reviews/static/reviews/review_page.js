// Choosing another intent starts the reply from that intent's template, unless the reviewer
// has already written their own reply (then their text is kept).
document.addEventListener("DOMContentLoaded", () => {
  const data = document.getElementById("reply-drafts");
  const intent = document.getElementById("id_intent");
  const reply = document.getElementById("id_reply");
  if (!data || !intent || !reply) return;
  const drafts = JSON.parse(data.textContent);
  let previous = intent.value;
  intent.addEventListener("change", () => {
    const untouched = reply.value.trim() === "" || reply.value.trim() === (drafts[previous] || "").trim();
    if (untouched) reply.value = drafts[intent.value] || "";
    previous = intent.value;
  });
});
