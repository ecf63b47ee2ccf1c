// Sign-in: the access key id and secret sign POST /console/session in the page; the secret
// field is emptied as soon as it is read and the secret is kept nowhere.

import { signIn } from "../api.js";
import { errorBox, fill, h } from "../dom.js";

export function signInView(onSignedIn) {
  const keyId = h("input", { id: "key-id", name: "username", autocomplete: "username", required: true, spellcheck: "false" });
  const secret = h("input", { id: "secret", type: "password", autocomplete: "off", required: true });
  const region = h("input", { id: "region", value: "us-east-1", required: true, spellcheck: "false" });
  const button = h("button", { type: "submit" }, "Sign in");
  const out = h("div", { "aria-live": "assertive" });
  const form = h(
    "form.signin",
    {
      on: {
        submit: async (e) => {
          e.preventDefault();
          const typed = secret.value;
          secret.value = "";
          button.disabled = true;
          fill(out);
          try {
            const who = await signIn(keyId.value.trim(), typed, region.value.trim() || "us-east-1");
            onSignedIn(who);
          } catch (error) {
            fill(out, errorBox(error));
            secret.focus();
          } finally {
            button.disabled = false;
          }
        },
      },
    },
    h("h1", {}, "Sign in to Lamina"),
    h("p.hint", {}, "Your access key signs this one request in the browser; the secret is not sent or kept."),
    h("label", { for: "key-id" }, "Access key id"),
    keyId,
    h("label", { for: "secret" }, "Secret access key"),
    secret,
    h("label", { for: "region" }, "Region"),
    region,
    h("p", {}, button),
    out,
  );
  return { title: "Sign in", el: form, focus: keyId };
}
