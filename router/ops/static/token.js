// A service with tokens: what the page fetches needs one. Asked once, kept for this tab
// (and shared with the service's other pages, the console's token box too).
const TOKEN_KEY = "switchyard.token";
let tokenAsked = false;
function withToken(options = {}) {
  const headers = { ...(options.headers || {}) };
  let token = "";
  try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch { token = ""; }
  if (token) headers.Authorization = `Bearer ${token}`;
  return { ...options, headers };
}
async function authed(url, options = {}) {
  let reply = await fetch(url, withToken(options));
  if (reply.status === 401 && !tokenAsked) {
    tokenAsked = true;
    const given = window.prompt("This service asks for a token (a read token will do):");
    if (given && given.trim()) {
      try { sessionStorage.setItem(TOKEN_KEY, given.trim()); } catch { /* private mode */ }
      reply = await fetch(url, withToken(options));
    }
  }
  return reply;
}
