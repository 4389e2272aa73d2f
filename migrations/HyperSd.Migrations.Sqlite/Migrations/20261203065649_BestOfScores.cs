using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class BestOfScores : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index",
                table: "generated_images");

            migrationBuilder.AddColumn<int>(
                name: "best_of",
                table: "generation_jobs",
                type: "INTEGER",
                nullable: false,
                // a job stored before best-of-n made one candidate per image
                defaultValue: 1);

            migrationBuilder.AddColumn<string>(
                name: "reward",
                table: "generation_jobs",
                type: "TEXT",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "candidate",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.AddColumn<bool>(
                name: "kept",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                // an image recorded before best-of-n is its job's image
                defaultValue: true);

            migrationBuilder.AddColumn<string>(
                name: "reward_name",
                table: "generated_images",
                type: "TEXT",
                nullable: true);

            migrationBuilder.AddColumn<double>(
                name: "score",
                table: "generated_images",
                type: "REAL",
                nullable: true);

            migrationBuilder.CreateIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index_candidate",
                table: "generated_images",
                columns: new[] { "job_id", "prompt_index", "image_index", "candidate" },
                unique: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index_candidate",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "best_of",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "reward",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "candidate",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "kept",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "reward_name",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "score",
                table: "generated_images");

            migrationBuilder.CreateIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index",
                table: "generated_images",
                columns: new[] { "job_id", "prompt_index", "image_index" },
                unique: true);
        }
    }
}
