// The flags the Bun peers share: --bind IP:PORT (default 127.0.0.1:0) and --threads N,
// which is accepted and ignored (see echo.js).
export function parseBind(script) {
    let bind = '127.0.0.1:0';
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i++) {
        if (argv[i] === '--bind' && i + 1 < argv.length) bind = argv[++i];
        else if (argv[i] === '--threads' && i + 1 < argv.length) i++;
        else {
            console.error(`usage: bun ${script} [--bind IP:PORT] [--threads N]`);
            process.exit(2);
        }
    }
    const colon = bind.lastIndexOf(':');
    return {
        hostname: bind.slice(0, colon).replace(/^\[|\]$/g, ''),
        port: Number(bind.slice(colon + 1)),
    };
}
