// The console's entry: decides sign-in vs app from GET /console/session, then routes by the
// URL's hash (#/functions, #/functions/<name>/<tab>, #/alarms). Each view may return a
// `stop` that ends its timers when the view is left.

import { session, signedOut, signOut } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import { alarmsView } from "./views/alarms.js";
import { functionView } from "./views/function.js";
import { functionsView } from "./views/functions.js";
import { signInView } from "./views/signin.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const nav = document.getElementById("nav");
let current = null;
let signedIn = null;

function mount(view) {
  current?.stop?.();
  current = view;
  document.title = `${view.title} · Lamina console`;
  fill(main, view.el);
  (view.focus || main).focus({ preventScroll: true });
}

function route() {
  if (!signedIn) return;
  const [page, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${page || "functions"}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    const [name, tab] = rest.map(decodeURIComponent); // URIError for a malformed address
    if (page === "alarms") mount(alarmsView());
    else if (page === "functions" && name) mount(functionView(name, tab));
    else mount(functionsView());
  } catch (error) {
    mount({ title: "Error", el: errorBox(error) });
  }
}

function showSignedIn(identity) {
  signedIn = identity;
  if (identity.AccessKeyId === null) {
    // `lamina serve --auth off`: no keys, nothing to sign in or out of.
    fill(who, "Authentication is off");
  } else {
    fill(
      who,
      h("span", { title: identity.Arn }, identity.AccessKeyId),
      " ",
      h("button", { type: "button", id: "sign-out", on: { click: leave } }, "Sign out"),
    );
  }
  nav.hidden = false;
  route();
}

function showSignIn() {
  signedIn = null;
  fill(who);
  nav.hidden = true;
  mount(signInView(showSignedIn));
}

async function leave() {
  try {
    await signOut();
  } catch {
    // The cookie may have expired already: signed out either way.
  }
  showSignIn();
}

signedOut.addEventListener("signedout", () => signedIn && showSignIn());
window.addEventListener("hashchange", route);

session().then(
  (identity) => (identity ? showSignedIn(identity) : showSignIn()),
  (error) => fill(main, errorBox(error)),
);
