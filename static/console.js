// Filters left empty, or at their default, stay out of the address the list pushes: a shorter
// link to share, read by the server the same way.
document.addEventListener("htmx:configRequest", (event) => {
  const data = event.detail.formData;
  const form = event.detail.elt.closest("form");
  if (event.detail.verb !== "get" || !data || !form) return;
  for (const key of [...new Set(data.keys())]) {
    const field = form.querySelector(`[name="${CSS.escape(key)}"]`);
    const fallback = field ? field.dataset.default : undefined;
    const kept = data.getAll(key).filter((v) => v !== "" && v !== fallback);
    data.delete(key);
    kept.forEach((v) => data.append(key, v));
  }
});
