// Progressive enhancement only: every page works without this file.
// Adds "Copy" buttons to code snippets.
document.querySelectorAll(".snippet").forEach((box) => {
  const button = box.querySelector("button.copy");
  const code = box.querySelector("pre");
  if (!button || !code || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(code.innerText);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
});
