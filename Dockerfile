# keypool: the gateway (`keypool serve`) and the worker (`keypool worker`), from source (tsx runs the TypeScript).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY packages ./packages
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY examples ./examples
USER node
EXPOSE 8080
ENTRYPOINT ["node", "packages/cli/bin/keypool.js"]
CMD ["serve", "--config", "/etc/keypool/keypool.yaml"]
