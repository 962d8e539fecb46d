// Lint: ESLint's and typescript-eslint's recommended rules over every part, without type information (so it takes
// seconds; tsc does the typing). Layout is Prettier's: eslint-config-prettier, last, turns off every rule that would
// fight its output. `npm run check` runs this after the typecheck.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'test/stock/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // A leading underscore names what is unused on purpose: a slot in a signature, a field dropped by rest.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // Our errors carry the cause's message in their own text, which is what the user reads; no second copy.
      'preserve-caught-error': 'off',
      // A variable a teardown closes over before the test assigns it stays `let`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      // Tests read YAML and JSON documents of any shape (charts, API objects) and poke at them.
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  prettier,
);
