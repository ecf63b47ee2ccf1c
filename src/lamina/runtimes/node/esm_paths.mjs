// Module resolution hooks (registered with module.register by handler.mjs) that let ES modules
// find packages where Lambda's Node.js runtime finds them: an ES module's bare import looks
// only in the node_modules of the importing file's parent directories, never in NODE_PATH, yet
// on Lambda a handler's `import ... from '@aws-sdk/client-s3'` finds the runtime's bundled SDK
// and a layer's /opt/nodejs/node_modules. A bare specifier not found the usual way is tried
// again as if imported from each NODE_PATH directory, in order.

let parents = [];

export async function initialize(data) {
  parents = data?.parents ?? [];
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const bare = !/^(\.|\/|[a-zA-Z][a-zA-Z0-9+.-]*:)/.test(specifier);
    if (!bare || error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
    for (const parentURL of parents) {
      try {
        return await nextResolve(specifier, { ...context, parentURL });
      } catch {
        // not there either: the next directory
      }
    }
    throw error;
  }
}
